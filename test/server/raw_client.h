// Raw clients for the server tests: bytes that no HTTP or gRPC library would send, idle
// connections and slow clients. Every wait is bounded.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::testing {

// RawSocket is one blocking-with-deadlines TCP connection to 127.0.0.1:port.
class RawSocket {
 public:
  explicit RawSocket(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      const int e = errno;
      ::close(fd_);
      throw std::runtime_error(std::string("connect: ") + std::strerror(e));
    }
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~RawSocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawSocket(RawSocket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  RawSocket& operator=(RawSocket&&) = delete;
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  // send() writes all of `data`; false when the peer has closed (EPIPE, ECONNRESET).
  bool send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  // shutdown_write() sends FIN: the request ends here.
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  // read_until_close() reads until the peer closes (or resets), or `timeout` passes; `closed`
  // tells which.
  std::string read_until_close(std::chrono::milliseconds timeout, bool* closed = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string out;
    char buf[16384];
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (closed != nullptr) *closed = true;
        return out;
      }
      out.append(buf, static_cast<std::size_t>(n));
    }
    if (closed != nullptr) *closed = false;
    return out;
  }

  // readable() tells, without waiting, whether bytes (or the peer's close) wait to be read.
  bool readable() const {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }

  // closed_by_peer() tells, without waiting, whether the peer has closed the connection (EOF or
  // reset seen); bytes waiting are read and dropped.
  bool closed_by_peer() {
    char buf[4096];
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) return false;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0) return true;
      if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
    }
  }

 private:
  int fd_ = -1;
};

// RawReply is a response read off a RawSocket: its status (0 if none) and the whole text.
struct RawReply {
  int status = 0;
  std::string text;
  bool closed = false;  // the server closed the connection afterwards
};

// raw_exchange() sends `bytes` on a fresh connection (then FIN when `finish`), and reads what
// comes back until the server closes or `timeout` passes.
inline RawReply raw_exchange(int port, std::string_view bytes, bool finish = false,
                             std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  RawSocket s(port);
  s.send(bytes);
  if (finish) s.shutdown_write();
  RawReply r;
  r.text = s.read_until_close(timeout, &r.closed);
  if (r.text.starts_with("HTTP/1.1 ") && r.text.size() >= 12)
    r.status = std::stoi(r.text.substr(9, 3));
  return r;
}

// raise_fd_limit() lifts this process's soft RLIMIT_NOFILE to at least `want` (up to the hard
// limit); returns the soft limit in force.
inline rlim_t raise_fd_limit(rlim_t want) {
  rlimit l{};
  if (::getrlimit(RLIMIT_NOFILE, &l) != 0) return 0;
  if (l.rlim_cur < want) {
    l.rlim_cur = l.rlim_max == RLIM_INFINITY ? want : std::min(want, l.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &l);
    ::getrlimit(RLIMIT_NOFILE, &l);
  }
  return l.rlim_cur;
}

// raw_grpc_call() sends `bytes`, as they are, as the request message of the unary `method`
// ("/package.Service/Method") on `channel`; the reply message's bytes go to `reply` (if given).
// Bounded: a call not answered within 5 s fails with DEADLINE_EXCEEDED.
inline grpc::Status raw_grpc_call(const std::shared_ptr<grpc::Channel>& channel,
                                  const std::string& method, const std::string& bytes,
                                  std::string* reply = nullptr) {
  grpc::GenericStub generic(channel);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer in(&slice, 1);
  grpc::ByteBuffer out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status(grpc::StatusCode::UNKNOWN, "no answer within 10 s");
  generic.UnaryCall(&ctx, method, grpc::StubOptions(), &in, &out, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    status = s;
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  if (!cv.wait_for(lock, std::chrono::seconds(10), [&] { return done; })) {
    ctx.TryCancel();
    cv.wait(lock, [&] { return done; });  // the callback must run before ctx goes away
  }
  if (reply != nullptr && status.ok()) {
    std::vector<grpc::Slice> slices;
    (void)out.Dump(&slices);
    reply->clear();
    for (const grpc::Slice& piece : slices)
      reply->append(reinterpret_cast<const char*>(piece.begin()), piece.size());
  }
  return status;
}

inline constexpr const char* kShouldRateLimit =
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

}  // namespace sluice::testing
