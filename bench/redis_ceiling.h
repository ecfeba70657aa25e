// The Redis path's ceiling: Redis running sluice's decide script for one request per call, as
// fast as it can take it, with nothing else on the client side. One thread drives `connections`
// connections (poll), each keeping `depth` calls in flight, as redis-benchmark does with -c and
// -P; every call is a fixed window hit of `limit` per `window` on a key drawn at random from
// `keys`, at one fixed time (the run's start). redis-benchmark itself cannot send the call: its
// arguments are binary (src/storage/redis/script.h).
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "sluice/store.h"
#include "storage/redis/client.h"
#include "storage/redis/decide.h"
#include "storage/redis/script.h"
#include "storage/redis/sha1.h"

namespace sluice::bench {

struct CeilingOptions {
  int port = 6379;  // on 127.0.0.1
  std::size_t keys = 100'000;
  int connections = 50;
  int depth = 16;
  double seconds = 3;
  Algorithm algorithm = Algorithm::kFixedWindow;
  std::uint64_t limit = 100;
  Micros window = 1'000'000;
};

struct CeilingResult {
  double calls_per_s = 0;
  double p50_us = 0;
  std::uint64_t errors = 0;  // error replies (there should be none)
};

// RedisCeiling() loads the script, runs the load for `seconds`, and reports calls/s and the
// median time from a call's write to its reply. Throws std::runtime_error when Redis cannot be
// reached or stops answering.
inline CeilingResult RedisCeiling(const CeilingOptions& o) {
  using Clock = std::chrono::steady_clock;
  struct Conn {
    int fd = -1;
    redis::ReplyReader reader;
    std::deque<Clock::time_point> sent;  // send times of the calls in flight
    std::string out;                     // bytes not yet written
  };
  auto connect_one = [&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) throw std::runtime_error("socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(o.port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      throw std::runtime_error("connect to 127.0.0.1:" + std::to_string(o.port));
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  };
  std::vector<Conn> conns(static_cast<std::size_t>(std::max(o.connections, 1)));
  for (Conn& c : conns)
    c.fd = connect_one();
  struct Closer {
    std::vector<Conn>& conns;
    ~Closer() {
      for (Conn& c : conns)
        if (c.fd >= 0) ::close(c.fd);
    }
  } closer{conns};

  // Load the script (SCRIPT LOAD on the first connection, waited for).
  {
    std::string load = "*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$" +
                       std::to_string(redis::kDecideScript.size()) + "\r\n" +
                       std::string(redis::kDecideScript) + "\r\n";
    if (::send(conns[0].fd, load.data(), load.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(load.size()))
      throw std::runtime_error("send SCRIPT LOAD");
    redis::Reply r;
    std::string error;
    char buf[4096];
    while (conns[0].reader.next(r, error) == 0) {
      const ssize_t n = ::recv(conns[0].fd, buf, sizeof buf, 0);
      if (n <= 0 ||
          !conns[0].reader.feed(std::string_view(buf, static_cast<std::size_t>(n)), error))
        throw std::runtime_error("SCRIPT LOAD: " + error);
    }
    if (r.is_error()) throw std::runtime_error("SCRIPT LOAD: " + r.str);
  }

  const std::string sha = redis::sha1_hex(redis::kDecideScript);
  const LimitSpec spec{o.algorithm, o.limit, o.window, 0};
  const Micros now = std::chrono::duration_cast<std::chrono::microseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<std::size_t> pick(0, std::max<std::size_t>(o.keys, 1) - 1);
  redis::DecideCall call;
  std::vector<std::string> key(1);
  auto append_call = [&](Conn& c) {
    std::string value = "bench:" + std::to_string(pick(rng));
    redis::redis_key("ceiling:", value, key[0]);
    const Hit hit{value, &spec, 1, true};
    call.build(std::span<const Hit>(&hit, 1), key, now, 1000, sha);
    c.out += call.resp;
    c.sent.push_back(Clock::now());
  };

  CeilingResult result;
  std::vector<double> latencies;
  std::uint64_t calls = 0;
  const auto start = Clock::now();
  const auto until =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  std::vector<pollfd> fds(conns.size());
  char buf[64 * 1024];
  for (Conn& c : conns) {
    for (int i = 0; i < o.depth; ++i)
      append_call(c);
  }
  bool running = true;
  while (running ||
         std::any_of(conns.begin(), conns.end(), [](const Conn& c) { return !c.sent.empty(); })) {
    for (std::size_t i = 0; i < conns.size(); ++i) {
      fds[i].fd = conns[i].fd;
      fds[i].events = static_cast<short>(POLLIN | (conns[i].out.empty() ? 0 : POLLOUT));
      fds[i].revents = 0;
    }
    if (::poll(fds.data(), fds.size(), 2000) <= 0) throw std::runtime_error("Redis stopped");
    const auto now_t = Clock::now();
    running = now_t < until;
    for (std::size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      if ((fds[i].revents & POLLOUT) != 0 && !c.out.empty()) {
        const ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) c.out.erase(0, static_cast<std::size_t>(n));
      }
      if ((fds[i].revents & (POLLIN | POLLERR | POLLHUP)) == 0) continue;
      const ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) throw std::runtime_error("Redis closed the connection");
      std::string error;
      if (!c.reader.feed(std::string_view(buf, static_cast<std::size_t>(n)), error))
        throw std::runtime_error(error);
      redis::Reply r;
      int got = 0;
      while ((got = c.reader.next(r, error)) == 1) {
        if (c.sent.empty()) throw std::runtime_error("a reply nobody asked for");
        if (r.is_error() || r.type != redis::Reply::Type::kArray || r.elements.size() != 1 ||
            r.elements[0].type != redis::Reply::Type::kArray)
          ++result.errors;
        if ((calls & 15) == 0) {
          latencies.push_back(
              std::chrono::duration<double, std::micro>(now_t - c.sent.front()).count());
        }
        c.sent.pop_front();
        ++calls;
        if (running) append_call(c);
      }
      if (got < 0) throw std::runtime_error(error);
    }
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  result.calls_per_s = static_cast<double>(calls) / elapsed;
  if (!latencies.empty()) {
    std::nth_element(latencies.begin(), latencies.begin() + latencies.size() / 2, latencies.end());
    result.p50_us = latencies[latencies.size() / 2];
  }
  return result;
}

}  // namespace sluice::bench
