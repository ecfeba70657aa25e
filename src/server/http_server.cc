#include "server/http_server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <charconv>
#include <optional>

namespace sluice::server {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

bool parse_listen(const std::string& listen, std::string& host, std::uint16_t& port,
                  std::string& error) {
  const std::size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    error = "listen address \"" + listen + "\": expected host:port";
    return false;
  }
  host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  const std::string p = listen.substr(colon + 1);
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
  if (p.empty() || ec != std::errc() || end != p.data() + p.size() || value > 65535) {
    error = "listen address \"" + listen + "\": port must be 0-65535";
    return false;
  }
  port = static_cast<std::uint16_t>(value);
  return true;
}

// Session is one connection: read a request, hand it to the handler, write the response, repeat.
class HttpServer::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(HttpServer& server, tcp::socket socket)
      : server_(server), stream_(std::move(socket)), deadline_(stream_.get_executor()) {
    if (server_.tls_) tls_.emplace(stream_, *server_.tls_);
  }
  ~Session() { server_.remove(this); }

  void start() {
    server_.add(shared_from_this());
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if (self->tls_) return self->handshake();
      self->read();
    });
  }

  // stop_if_idle() closes a kept-alive connection that waits for its next request and has none
  // waiting. A request that has come (its bytes waiting, or being read, handled or answered) is
  // answered first, then the connection closes, as the server is stopping; so is the first
  // request of a connection that has answered none yet (its client connected to send one; the
  // idle timeout and the grace period bound the wait).
  void stop_if_idle() {
    if (!busy_ && answered_ != 0 && !request_waiting()) {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
      stream_.socket().close(ec);
    }
  }

  beast::tcp_stream& stream() { return stream_; }

 private:
  // on_stream() runs `op` on what the connection speaks: TLS over the TCP stream, or plain TCP.
  template <class Op>
  void on_stream(Op&& op) {
    if (tls_)
      op(*tls_);
    else
      op(stream_);
  }

  // handshake() runs the TLS handshake, bounded by the idle timeout like a request: a client
  // that never completes it is dropped.
  void handshake() {
    arm(server_.options_.idle_timeout);
    tls_->async_handshake(net::ssl::stream_base::server, [self = shared_from_this()](
                                                             beast::error_code ec) {
      if (!ec) return self->read();
      spdlog::debug("https: a client's TLS handshake failed: {}", ec.message());
      if (ec.category() == net::error::get_ssl_category() &&
          ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_HTTP_REQUEST) {
        // Plain HTTP to the HTTPS port: say so, in plain HTTP.
        return net::post(self->stream_.get_executor(), [self] {
          self->tls_.reset();
          self->refuse(http::status::bad_request, "this port speaks HTTPS: plain HTTP was sent");
        });
      }
      self->close();
    });
  }

  // request_waiting() tells whether a client has sent bytes this connection has not read yet:
  // the start of a request that must be answered even while the server stops.
  bool request_waiting() {
    beast::error_code ec;
    return buffer_.size() != 0 || stream_.socket().available(ec) != 0;
  }

  void read() {
    busy_ = false;
    // While stopping, a connection reads only a request already sent (or the first one of a
    // connection accepted while stopping, which its client sent before the listener closed).
    if (server_.stopping_.load(std::memory_order_relaxed) && answered_ != 0 && !request_waiting())
      return close();
    parser_.emplace();
    parser_->body_limit(server_.options_.max_body_bytes);
    parser_->header_limit(static_cast<std::uint32_t>(server_.options_.max_header_bytes));
    arm(server_.options_.idle_timeout);
    on_stream([&](auto& stream) {
      http::async_read_header(
          stream, buffer_, *parser_,
          [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
    });
  }

  void on_header(beast::error_code ec) {
    busy_ = true;
    if (ec) return on_read(ec);
    const auto& req = parser_->get();
    auto expect = req.find(http::field::expect);
    if (expect != req.end() && beast::iequals(expect->value(), "100-continue")) {
      // The client waits for this before it sends the body (curl does, for large PUTs).
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_,
                                                                     req.version());
      on_stream([&](auto& stream) {
        http::async_write(stream, *cont,
                          [self = shared_from_this(), cont](beast::error_code wec, std::size_t) {
                            if (wec) return self->close();
                            self->read_body();
                          });
      });
      return;
    }
    read_body();
  }

  void read_body() {
    on_stream([&](auto& stream) {
      http::async_read(
          stream, buffer_, *parser_,
          [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
    });
  }

  void on_read(beast::error_code ec) {
    if (ec && timed_out_ && (busy_ || buffer_.size() != 0) &&
        !server_.stopping_.load(std::memory_order_relaxed)) {
      // Part of a request arrived, not all of it in time: say so rather than vanish.
      return refuse(http::status::request_timeout,
                    "request timeout: the request did not arrive complete within " +
                        std::to_string(server_.options_.idle_timeout.count()) + " ms");
    }
    if (timed_out_ || ec == http::error::end_of_stream || ec == net::error::operation_aborted ||
        ec == beast::error::timeout || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == net::error::bad_descriptor ||
        ec == net::ssl::error::stream_truncated) {
      return close();
    }
    if (ec) {
      // The request cannot be read: answer why, then close (the stream's framing is lost).
      http::status status = http::status::bad_request;
      std::string what = "bad request: " + ec.message();
      if (ec == http::error::body_limit) {
        status = http::status::payload_too_large;
        what = "request body too large: the limit is " +
               std::to_string(server_.options_.max_body_bytes) + " bytes";
      } else if (ec == http::error::header_limit) {
        status = http::status::request_header_fields_too_large;
        what = "request headers too large";
      }
      return refuse(status, what);
    }
    auto request = std::make_shared<HttpRequest>(parser_->release());
    if (server_.options_.handler_pool == nullptr) return respond(*request);
    // The work guard keeps the I/O threads running while the handler is away: with nothing
    // else to do (the server stopping), they would otherwise return and never write its answer.
    server_.options_.handler_pool->post(
        [self = shared_from_this(), request, work = net::make_work_guard(stream_.get_executor())] {
          HttpResponse res = self->handle(*request);
          net::post(self->stream_.get_executor(), [self, request, res = std::move(res)]() mutable {
            self->res_ = std::move(res);
            self->finish(*request);
          });
        });
  }

  // refuse() answers a request that cannot be read with `status` and {"error": what} (plain
  // ASCII, no quotes), then closes: the stream's framing is lost.
  void refuse(http::status status, const std::string& what) {
    res_ = HttpResponse(status, 11);
    res_.set(http::field::content_type, "application/json");
    res_.body() = "{\"error\":\"" + what + "\"}\n";
    res_.keep_alive(false);
    linger_ = true;
    write();
  }

  // arm() (re)starts the connection's deadline: `timeout` from now, on_deadline() runs unless
  // arm() or close() comes first.
  void arm(std::chrono::milliseconds timeout) {
    timed_out_ = false;
    deadline_.expires_after(timeout);
    deadline_.async_wait([weak = weak_from_this()](beast::error_code ec) {
      if (ec) return;  // re-armed or cancelled
      if (auto self = weak.lock()) self->on_deadline();
    });
  }

  // on_deadline() ends what the connection waits for. A read: the receiving side is shut down,
  // so that this read and any later one end (cancel() alone misses a read that completed just
  // before it, after which the composed read carries on without a deadline), and on_read()
  // answers 408 if part of a request came, or closes. A write (a client that does not read its
  // answer): the socket is closed. Not beast's own stream timeout, which closes the socket in
  // every case and so leaves no way to answer.
  void on_deadline() {
    timed_out_ = true;
    beast::error_code ec;
    if (writing_) {
      stream_.socket().close(ec);
      return;
    }
    stream_.socket().shutdown(tcp::socket::shutdown_receive, ec);
    stream_.socket().cancel(ec);
  }

  // handle() runs the handler; an exception becomes a 500.
  HttpResponse handle(HttpRequest& request) {
    try {
      return server_.handler_(request);
    } catch (const std::exception& e) {
      spdlog::error("http handler: {}", e.what());
      HttpResponse res(http::status::internal_server_error, request.version());
      res.set(http::field::content_type, "application/json");
      res.body() = "{\"error\":\"internal error\"}\n";
      return res;
    }
  }

  void respond(HttpRequest& request) {
    res_ = handle(request);
    finish(request);
  }

  // finish() completes res_ for `request` and writes it (on the connection's strand).
  void finish(const HttpRequest& request) {
    res_.version(request.version());
    head_ = request.method() == http::verb::head;
    res_.keep_alive(request.keep_alive() && !server_.stopping_.load(std::memory_order_relaxed));
    write();
  }

  void write() {
    arm(server_.options_.idle_timeout);  // a client that does not read its answer is cut off
    res_.prepare_payload();
    if (head_) res_.body().clear();  // HEAD: the headers of a GET, Content-Length included
    head_ = false;
    on_stream([&](auto& stream) {
      writing_ = true;
      http::async_write(stream, res_,
                        [self = shared_from_this()](beast::error_code ec, std::size_t) {
                          self->writing_ = false;
                          ++self->answered_;
                          if (!ec && self->linger_) return self->linger();
                          if (ec || !self->res_.keep_alive()) return self->close();
                          self->read();
                        });
    });
  }

  // linger() closes after a refused request as nginx's lingering close does: stop sending, then
  // read and discard what the client still sends (bounded in bytes and time), so that a client
  // still writing the body it was refused for reads the answer instead of a reset.
  void linger() {
    constexpr std::size_t kChunk = 16 << 10;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (!scratch_) scratch_ = std::make_unique<char[]>(kChunk);
    stream_.expires_after(std::chrono::seconds(2));
    on_stream([&](auto& stream) {
      stream.async_read_some(net::buffer(scratch_.get(), kChunk),
                             [self = shared_from_this()](beast::error_code rec, std::size_t n) {
                               self->drained_ += n;
                               if (rec || self->drained_ > (64u << 20)) return self->close();
                               self->linger();
                             });
    });
  }

  void close() {
    busy_ = false;
    deadline_.cancel();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
  }

  HttpServer& server_;
  beast::tcp_stream stream_;
  std::optional<beast::ssl_stream<beast::tcp_stream&>> tls_;  // over stream_, with HTTPS
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpResponse res_;
  boost::asio::steady_timer deadline_;  // HttpServerOptions::idle_timeout, see arm()
  bool timed_out_ = false;              // the deadline passed since the last arm()
  bool writing_ = false;                // an answer is being written
  bool busy_ = false;  // a request is being read past its header, handled or answered
  bool linger_ = false;
  bool head_ = false;
  std::uint64_t answered_ = 0;       // answers written
  std::unique_ptr<char[]> scratch_;  // what linger() reads into
  std::size_t drained_ = 0;
};

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler)
    : options_(std::move(options)),
      handler_(std::move(handler)),
      acceptor_(net::make_strand(io_)),  // accepts, their retry timer and close: one at a time
      accept_retry_(acceptor_.get_executor()) {}

HttpServer::~HttpServer() {
  shutdown(std::chrono::milliseconds(0));
}

namespace {

// tls_server_context() loads the certificate, key and client CAs of `o` into a TLS server context
// (TLS 1.2 or later); nullptr with `error` naming the file that cannot be used.
std::unique_ptr<net::ssl::context> tls_server_context(const HttpServerOptions& o,
                                                      std::string& error) {
  auto ctx = std::make_unique<net::ssl::context>(net::ssl::context::tls_server);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::single_dh_use);
  beast::error_code ec;
  auto failed = [&](const char* what, const std::string& file) {
    if (!ec) return false;
    error = std::string("TLS: cannot use ") + what + " '" + file + "': " + ec.message();
    return true;
  };
  ctx->use_certificate_chain_file(o.tls_cert_file, ec);
  if (failed("the certificate", o.tls_cert_file)) return nullptr;
  ctx->use_private_key_file(o.tls_key_file, net::ssl::context::pem, ec);
  if (failed("the private key", o.tls_key_file)) return nullptr;
  if (!o.tls_client_ca_file.empty()) {
    ctx->load_verify_file(o.tls_client_ca_file, ec);
    if (failed("the client CA", o.tls_client_ca_file)) return nullptr;
    ctx->set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert);
  }
  return ctx;
}

}  // namespace

bool HttpServer::start(std::string& error) {
  if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
    if (options_.tls_cert_file.empty() || options_.tls_key_file.empty()) {
      error = "TLS needs both a certificate and its private key";
      return false;
    }
    tls_ = tls_server_context(options_, error);
    if (!tls_) return false;
  } else if (!options_.tls_client_ca_file.empty()) {
    error = "TLS: a client CA needs a certificate and key of the server's own";
    return false;
  }
  std::string host;
  std::uint16_t port = 0;
  if (!parse_listen(options_.listen, host, port, error)) return false;
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(host, ec);
  if (ec) {
    error = "listen address \"" + options_.listen + "\": \"" + host + "\" is not an IP address";
    return false;
  }
  const tcp::endpoint endpoint(address, port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    error = "cannot listen on " + options_.listen + ": " + ec.message();
    beast::error_code ignored;
    acceptor_.close(ignored);
    return false;
  }
  port_ = acceptor_.local_endpoint().port();
  accept();
  unsigned n = options_.threads != 0 ? options_.threads : std::thread::hardware_concurrency();
  if (n == 0) n = 1;
  for (unsigned i = 0; i < n; ++i)
    threads_.emplace_back([this] { io_.run(); });
  return true;
}

void HttpServer::serve(tcp::socket socket) {
  beast::error_code nodelay_ec;
  socket.set_option(tcp::no_delay(true), nodelay_ec);
  std::make_shared<Session>(*this, std::move(socket))->start();
}

void HttpServer::accept() {
  acceptor_.async_accept(net::make_strand(io_), [this](beast::error_code ec, tcp::socket socket) {
    if (!ec) serve(std::move(socket));  // also while stopping: its client may have sent already
    if (stopping_.load() || ec == net::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors, say: the connection stays queued and accepting again at once fails
      // at once, a loop that would take a core. Log, wait a moment, then accept again.
      spdlog::warn("http accept: {} (accepting again in 50 ms)", ec.message());
      accept_retry_.expires_after(std::chrono::milliseconds(50));
      accept_retry_.async_wait([this](beast::error_code wec) {
        if (!wec && !stopping_.load()) accept();
      });
      return;
    }
    accept();
  });
}

void HttpServer::add(const std::shared_ptr<Session>& session) {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  sessions_.emplace(session.get(), session);
}

void HttpServer::remove(Session* session) {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  sessions_.erase(session);
}

void HttpServer::shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  stopping_.store(true);
  net::post(acceptor_.get_executor(), [this] {
    // Serve the connections the kernel has queued before closing the listener: their clients
    // may have sent requests already, which closing would reset unanswered. Connections that
    // come later are refused (nothing sent is lost: the client sees the refusal).
    beast::error_code ec;
    acceptor_.non_blocking(true, ec);
    for (int i = 0; i < 100'000 && !ec; ++i) {
      tcp::socket socket(net::make_strand(io_));
      acceptor_.accept(socket, ec);
      if (!ec) serve(std::move(socket));
    }
    acceptor_.close(ec);
    accept_retry_.cancel();
  });
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    for (auto& [ptr, weak] : sessions_)
      if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live)
    net::post(s->stream().get_executor(), [s] { s->stop_if_idle(); });
  live.clear();
  // The threads return once every connection has closed; past the grace period, cut them off.
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(sessions_mu_);
      if (sessions_.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    if (!sessions_.empty()) io_.stop();
  }
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

}  // namespace sluice::server
