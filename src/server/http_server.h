// An HTTP/1.1 server on Boost.Beast: keep-alive, pipelining-safe (one request at a time per
// connection, in order), bounded headers and bodies, idle timeouts, `Expect: 100-continue`, and
// a graceful shutdown that finishes the requests in flight.
//
// The server knows nothing of rate limiting: it hands each complete request to a handler and
// writes back what the handler returns. The handler runs on one of the server's threads.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "server/blocking_pool.h"

namespace boost::asio::ssl {
class context;
}

namespace sluice::server {

namespace http = boost::beast::http;
using HttpRequest = http::request<http::string_body>;
using HttpResponse = http::response<http::string_body>;
using HttpHandler = std::function<HttpResponse(HttpRequest& request)>;

struct HttpServerOptions {
  std::string listen = "127.0.0.1:8080";    // host:port; port 0 picks a free one
  unsigned threads = 0;                     // 0: one per core
  std::size_t max_body_bytes = 1 << 20;     // larger bodies get 413
  std::size_t max_header_bytes = 16 << 10;  // larger request lines + headers get 431
  // The time a connection has to deliver one complete request (headers and body), counted from
  // when it opened or was last answered. An idle keep-alive connection is then closed; one that
  // sent part of a request (a slow client, a body shorter than its Content-Length) is answered
  // 408 and closed. So a connection holds the server's resources this long at most between
  // answers, however slowly it sends.
  std::chrono::milliseconds idle_timeout{60'000};
  // Where handlers run: null, on the I/O threads (for handlers that never block); otherwise on
  // this pool (for handlers that wait on a remote store), the I/O threads carrying on meanwhile.
  BlockingPool* handler_pool = nullptr;
  // HTTPS instead of HTTP when both are set: a PEM certificate chain and its private key; TLS 1.2
  // or later. The TLS handshake must complete within idle_timeout. With tls_client_ca (PEM CAs),
  // clients must present a certificate those CAs signed (mutual TLS).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
};

// parse_listen() splits "host:port" ("[::1]:80", ":8080" = all addresses). False on error.
bool parse_listen(const std::string& listen, std::string& host, std::uint16_t& port,
                  std::string& error);

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // start() binds, listens and starts the threads. False with `error` when it cannot listen.
  bool start(std::string& error);
  // port() is the bound port (after start()).
  std::uint16_t port() const noexcept { return port_; }
  // shutdown() stops accepting, lets the requests in flight finish and be answered (their
  // connections then close), closes idle connections, and joins the threads; what is still
  // running after `grace` is cut off. Idempotent.
  void shutdown(std::chrono::milliseconds grace = std::chrono::seconds(10));

  class Session;

 private:
  void accept();
  // serve() starts a session on an accepted connection.
  void serve(boost::asio::ip::tcp::socket socket);
  void add(const std::shared_ptr<Session>& session);
  void remove(Session* session);

  HttpServerOptions options_;
  HttpHandler handler_;
  std::atomic<bool> stopping_{false};
  // Declared before io_: sessions still queued in io_ unregister themselves when it is destroyed.
  std::mutex sessions_mu_;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer accept_retry_;          // after a failed accept (out of descriptors)
  std::unique_ptr<boost::asio::ssl::context> tls_;  // with tls_cert_file: what sessions speak
  std::vector<std::thread> threads_;
  std::uint16_t port_ = 0;
  bool shut_down_ = false;
};

}  // namespace sluice::server
