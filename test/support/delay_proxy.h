// DelayProxy: a TCP proxy on a free loopback port that forwards to a real server (a redis-server)
// and holds every reply for a settable delay: a slow Redis, for fault-injection tests.
//
// One thread runs poll() over the listener and every connection pair. Bytes from a client go to
// the upstream at once; bytes from the upstream are queued with the time they arrived and are
// written to the client once `delay` has passed since then (the delay in force when they
// arrived). Closing either side closes both. set_delay() is thread-safe and applies to replies
// that arrive after it; the proxy itself never judges a limit, it only makes replies late.
//
// Example:
//   RedisServer redis;
//   DelayProxy proxy("127.0.0.1", redis.port());
//   proxy.set_delay(std::chrono::milliseconds(300));  // connect the store to proxy.port()
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace sluice::testing {

class DelayProxy {
 public:
  // Listens on 127.0.0.1:<kernel-chosen port> and starts the thread. Throws std::runtime_error.
  DelayProxy(std::string upstream_host, int upstream_port);
  ~DelayProxy();  // stops the thread, closes every connection
  DelayProxy(const DelayProxy&) = delete;
  DelayProxy& operator=(const DelayProxy&) = delete;

  int port() const { return port_; }
  // set_delay() sets how long replies are held from now on. Thread-safe.
  void set_delay(std::chrono::milliseconds delay) { delay_ms_.store(delay.count()); }
  std::chrono::milliseconds delay() const { return std::chrono::milliseconds(delay_ms_.load()); }
  // connections() counts the client connections accepted so far. Thread-safe.
  int connections() const { return connections_.load(); }

 private:
  void run();

  std::string upstream_host_;
  int upstream_port_;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};  // a pipe: the destructor writes to stop the thread
  int port_ = 0;
  std::atomic<long long> delay_ms_{0};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

}  // namespace sluice::testing
