// load/http_load.cc — sluice-bench's HTTP/1.1 client: Boost.Asio + Beast, one io_context per
// client thread, keep-alive connections carrying one request at a time (no pipelining, as
// nginx's auth_request and most gateways send them).
//
// Per request the client writes bytes built before the run and parses only the status line:
// the response parser keeps no headers or body, so a request costs no heap allocation (Asio
// recycles its handler memory per thread). Timeouts are enforced by one sweep timer per thread
// that closes connections whose request is overdue, rather than a timer per request.
#include <algorithm>
#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/read.hpp>
#include <charconv>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "load/load.h"

namespace sluice::load {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using std::chrono::nanoseconds;

// Requests for up to this many keys are built once, before the run, and shared by all threads
// (~200 bytes each); above it each request is spliced into its connection's reused buffer.
constexpr std::size_t kPrebuiltKeys = 65536;

// The largest response body accepted: sluice's answers are a few hundred bytes.
constexpr std::uint64_t kBodyLimit = 1 << 20;

// StatusParser reads one HTTP response and keeps only its status: the fields and the body are
// skipped, so parsing allocates nothing. A parser reads one message; a new one (in place, in
// an std::optional) is made per response.
class StatusParser final : public http::basic_parser<false> {
 public:
  StatusParser() { body_limit(kBodyLimit); }
  int status() const { return status_; }

 private:
  void on_request_impl(http::verb, beast::string_view, beast::string_view, int,
                       beast::error_code&) override {}
  void on_response_impl(int code, beast::string_view, int, beast::error_code&) override {
    status_ = code;
  }
  void on_field_impl(http::field, beast::string_view, beast::string_view,
                     beast::error_code&) override {}
  void on_header_impl(beast::error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>&, beast::error_code&) override {}
  std::size_t on_body_impl(beast::string_view body, beast::error_code&) override {
    return body.size();
  }
  void on_chunk_header_impl(std::uint64_t, beast::string_view, beast::error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body,
                                 beast::error_code&) override {
    return body.size();
  }
  void on_finish_impl(beast::error_code&) override {}

  int status_ = 0;
};

// RequestBuilder writes the complete bytes of the request for one descriptor value.
class RequestBuilder {
 public:
  explicit RequestBuilder(const LoadOptions& o) {
    const std::string host = "Host: " + o.host + ":" + o.port + "\r\n";
    if (o.endpoint == Endpoint::kAuthz) {
      // Forward auth: the server builds the descriptors from these headers.
      head_ = "GET /v1/authz HTTP/1.1\r\n" + host +
              "X-Original-URI: " + (o.path.empty() ? std::string("/") : o.path) + "\r\nX-Real-IP: ";
      tail_ = "\r\n\r\n";
      return;
    }
    // The JSON is made by nlohmann (which escapes the user's domain, key and path) around a
    // placeholder, then cut at the placeholder; the values themselves never need escaping.
    static constexpr std::string_view kPlaceholder = "@@sluice-bench-value@@";
    nlohmann::json body;
    if (!o.path.empty()) {
      body = {{"path", o.path}, {"data", {{o.key, kPlaceholder}}}};
    } else {
      body = {{"domain", o.domain},
              {"descriptors", {{{"entries", {{{"key", o.key}, {"value", kPlaceholder}}}}}}}};
    }
    const std::string text = body.dump();
    const std::size_t at = text.find(kPlaceholder);
    body_before_ = text.substr(0, at);
    body_after_ = text.substr(at + kPlaceholder.size());
    head_ = std::string("POST ") + (o.endpoint == Endpoint::kJson ? "/json" : "/v1/check") +
            " HTTP/1.1\r\n" + host + "Content-Type: application/json\r\nContent-Length: ";
    post_ = true;
  }

  // MaxFixedSize() bounds the bytes Append() adds besides the value.
  std::size_t MaxFixedSize() const {
    return head_.size() + tail_.size() + body_before_.size() + body_after_.size() + 32;
  }

  // Append() appends the request for `value` to `out`; no allocation when `out` has room.
  void Append(std::string& out, std::string_view value) const {
    out.append(head_);
    if (post_) {
      std::array<char, 24> digits;
      const std::size_t length = body_before_.size() + value.size() + body_after_.size();
      out.append(digits.data(),
                 std::to_chars(digits.data(), digits.data() + digits.size(), length).ptr);
      out.append("\r\n\r\n");
      out.append(body_before_);
      out.append(value);
      out.append(body_after_);
    } else {
      out.append(value);
      out.append(tail_);
    }
  }

 private:
  bool post_ = false;
  std::string head_, tail_, body_before_, body_after_;
};

const char* EndpointPath(Endpoint e) {
  switch (e) {
    case Endpoint::kJson:
      return "/json";
    case Endpoint::kCheck:
      return "/v1/check";
    case Endpoint::kAuthz:
      return "/v1/authz";
  }
  return "?";
}

class HttpLoad final : public LoadGenerator {
 public:
  HttpLoad(const LoadOptions& options, tcp::endpoint endpoint)
      : options_(options),
        endpoint_(endpoint),
        builder_(options),
        address_values_(KeyUsesAddresses(options)) {
    if (options.keys <= kPrebuiltKeys) {
      std::string value;
      offsets_.reserve(options.keys + 1);
      for (std::size_t i = 0; i < options.keys; ++i) {
        offsets_.push_back(prebuilt_.size());
        value.clear();
        WriteKeyValue(value, i, address_values_);
        builder_.Append(prebuilt_, value);
      }
      offsets_.push_back(prebuilt_.size());
    }
  }

  void RunThread(const ThreadPlan& plan, ThreadStats& stats) const override;

  std::string Describe() const override {
    return "http " + options_.host + ":" + options_.port + " " + EndpointPath(options_.endpoint);
  }

  // Request() returns the bytes of the request for key `i`: prebuilt, or built into `scratch`.
  // Thread-safe (the prebuilt table is read-only during the run).
  std::string_view Request(std::size_t i, std::string& scratch) const {
    if (!offsets_.empty()) {
      return std::string_view(prebuilt_).substr(offsets_[i], offsets_[i + 1] - offsets_[i]);
    }
    scratch.clear();
    return BuildInto(i, scratch);
  }

  const LoadOptions& options() const { return options_; }
  const tcp::endpoint& endpoint() const { return endpoint_; }

 private:
  std::string_view BuildInto(std::size_t i, std::string& scratch) const {
    // The value is written at the end of `scratch` first, then the request after it, so one
    // reused buffer holds both; the request is the part after the value.
    WriteKeyValue(scratch, i, address_values_);
    const std::size_t value_size = scratch.size();
    // Room for all of it first: Append() must not reallocate the value it reads from.
    scratch.reserve(2 * value_size + builder_.MaxFixedSize());
    builder_.Append(scratch, std::string_view(scratch.data(), value_size));
    return std::string_view(scratch).substr(value_size);
  }

  LoadOptions options_;
  tcp::endpoint endpoint_;
  RequestBuilder builder_;
  bool address_values_;
  std::string prebuilt_;
  std::vector<std::size_t> offsets_;
};

// HttpThread is one client thread: its io_context, connections and timers. Everything runs on
// the thread that calls Run(); nothing here is shared.
class HttpThread {
 public:
  HttpThread(const HttpLoad& load, const ThreadPlan& plan, ThreadStats& stats)
      : load_(load),
        plan_(plan),
        stats_(stats),
        timeout_(load.options().timeout),
        pacer_(io_),
        sweep_(io_),
        end_(io_),
        hard_stop_(io_),
        keys_(plan.keys) {
    for (int i = 0; i < plan.slots; ++i)
      connections_.push_back(std::make_unique<Connection>(io_));
  }

  void Run() {
    const Timeline& t = plan_.timeline;
    end_.expires_at(t.measure_end);
    end_.async_wait([this](beast::error_code ec) {
      if (!ec) OnMeasureEnd();
    });
    hard_stop_.expires_at(t.hard_stop);
    hard_stop_.async_wait([this](beast::error_code ec) {
      if (!ec) io_.stop();  // whatever is still in flight is abandoned
    });
    ArmSweep();

    std::this_thread::sleep_until(t.start);
    const Clock::time_point now = Clock::now();
    if (plan_.open_loop) {
      for (auto& c : connections_)
        free_.push_back(c.get());
      Pump(now);
    } else {
      for (auto& c : connections_) {
        active_++;
        Issue(*c, now, now);
      }
    }
    io_.run();
  }

 private:
  struct Connection {
    explicit Connection(asio::io_context& io) : socket(io), backoff(io) {}
    enum class State { kIdle, kRequest, kBackoff };

    tcp::socket socket;
    asio::steady_timer backoff;
    beast::flat_buffer buffer;
    std::optional<StatusParser> parser;
    std::string scratch;         // the request, when not prebuilt
    std::string_view request;    // the bytes being written
    Clock::time_point start;     // latency is measured from here (intended time in open loop)
    Clock::time_point deadline;  // the request times out here
    State state = State::kIdle;
    bool measured = false;
    bool connected = false;
    bool reused = false;  // the request went on a connection kept alive from an earlier one
    bool timed_out = false;
  };

  // Issue() sends the next request on `c`, connecting first if needed.
  void Issue(Connection& c, Clock::time_point start, Clock::time_point now) {
    c.state = Connection::State::kRequest;
    c.start = start;
    c.measured = start >= plan_.timeline.measure_begin;
    c.deadline = now + timeout_;
    c.timed_out = false;
    c.request = load_.Request(keys_.Next(), c.scratch);
    c.reused = c.connected;
    if (c.connected) {
      Write(c);
      return;
    }
    Connect(c);
  }

  void Connect(Connection& c) {
    beast::error_code ignored;
    c.socket.close(ignored);
    c.buffer.clear();
    c.socket.async_connect(load_.endpoint(), [this, &c](beast::error_code ec) {
      if (ec) return Fail(c, "connect", ec);
      c.connected = true;
      beast::error_code nodelay_ec;  // best effort: requests are written whole anyway
      c.socket.set_option(tcp::no_delay(true), nodelay_ec);
      Write(c);
    });
  }

  void Write(Connection& c) {
    c.parser.reset();  // (Fail() looks at it: no response yet)
    asio::async_write(c.socket, asio::buffer(c.request),
                      [this, &c](beast::error_code ec, std::size_t) {
                        if (ec) return Fail(c, "write", ec);
                        Read(c);
                      });
  }

  void Read(Connection& c) {
    c.parser.emplace();
    http::async_read(c.socket, c.buffer, *c.parser, [this, &c](beast::error_code ec, std::size_t) {
      if (ec) return Fail(c, "read", ec);
      const Clock::time_point now = Clock::now();
      const int status = c.parser->status();
      if (!c.parser->keep_alive()) Close(c);
      Outcome outcome = Outcome::kStatusError;
      if (status == 200) {
        outcome = Outcome::kOk;
      } else if (status == (load_.options().endpoint == Endpoint::kAuthz
                                ? load_.options().deny_status
                                : 429)) {
        outcome = Outcome::kOverLimit;
      }
      stats_.Record(c.measured, outcome, now - c.start);
      if (outcome == Outcome::kStatusError) {
        stats_.NoteError("HTTP status " + std::to_string(status));
        return Backoff(c);
      }
      Release(c, now);
    });
  }

  void Close(Connection& c) {
    beast::error_code ignored;
    c.socket.close(ignored);
    c.connected = false;
  }

  // Fail() counts a transport error or timeout on `c` and backs off.
  void Fail(Connection& c, const char* what, const beast::error_code& ec) {
    // A kept-alive connection the server closed while it was idle fails at once, before any
    // of the response: send again on a new connection, once, as HTTP clients do. The latency
    // still runs from the request's start.
    if (c.reused && !c.timed_out && !(c.parser && c.parser->got_some())) {
      c.reused = false;
      Close(c);
      return Connect(c);
    }
    const Outcome outcome = c.timed_out ? Outcome::kTimeout : Outcome::kTransportError;
    stats_.Record(c.measured, outcome, nanoseconds(0));
    stats_.NoteError(c.timed_out ? std::string("timeout (") + what + ")"
                                 : std::string(what) + ": " + ec.message());
    Close(c);
    Backoff(c);
  }

  void Backoff(Connection& c) {
    c.state = Connection::State::kBackoff;
    c.backoff.expires_after(kErrorBackoff);
    c.backoff.async_wait([this, &c](beast::error_code ec) {
      if (!ec) Release(c, Clock::now());
    });
  }

  // Release() is called when `c` has finished a request (or its back-off): closed loop sends
  // the next one at once; open loop returns the connection to the free list.
  void Release(Connection& c, Clock::time_point now) {
    if (now >= plan_.timeline.measure_end) {
      c.state = Connection::State::kIdle;
      Close(c);
      active_--;
      MaybeStop();
      return;
    }
    if (!plan_.open_loop) return Issue(c, now, now);
    c.state = Connection::State::kIdle;
    active_--;
    free_.push_back(&c);
    Pump(now);
  }

  // Pump() (open loop) sends every request that is due while a connection is free, then arms
  // the pacer for the next one. A request sent late is still timed from its intended time: the
  // wait is part of what its user would have seen (coordinated omission).
  void Pump(Clock::time_point now) {
    const Timeline& t = plan_.timeline;
    while (!free_.empty()) {
      const Clock::time_point due = plan_.schedule.Due(next_due_);
      if (due >= t.measure_end || due > now) break;
      Connection& c = *free_.back();
      free_.pop_back();
      ++next_due_;
      if (due >= t.measure_begin) {
        stats_.sent.Add();
        const nanoseconds lag = now - due;
        stats_.max_lag_ns.SetMax(static_cast<std::uint64_t>(lag.count()));
        if (lag > kLateThreshold) (backlog_ ? stats_.late_no_slot : stats_.late_client).Add();
      }
      active_++;
      Issue(c, due, now);
    }
    const Clock::time_point next = plan_.schedule.Due(next_due_);
    // A backlog starts when a due request finds every connection busy, and lasts until the
    // schedule is caught up; requests sent late meanwhile waited for a connection.
    if (free_.empty() && next <= now) backlog_ = true;
    if (next > now) backlog_ = false;
    if (!pacer_armed_ && !free_.empty() && next < t.measure_end) {
      pacer_armed_ = true;
      pacer_.expires_at(next);
      pacer_.async_wait([this](beast::error_code ec) {
        pacer_armed_ = false;
        if (!ec) Pump(Clock::now());
      });
    }
  }

  // OnMeasureEnd(): no request starts from now on. Open loop counts what was due but never
  // sent (every connection was busy).
  void OnMeasureEnd() {
    ending_ = true;
    pacer_.cancel();
    if (plan_.open_loop) {
      const Timeline& t = plan_.timeline;
      for (;; ++next_due_) {
        const Clock::time_point due = plan_.schedule.Due(next_due_);
        if (due >= t.measure_end) break;
        if (due >= t.measure_begin) stats_.unsent.Add();
      }
    }
    for (Connection* c : free_)
      Close(*c);
    free_.clear();
    MaybeStop();
  }

  void MaybeStop() {
    if (ending_ && active_ == 0) io_.stop();
  }

  // The sweep closes the connections whose request is overdue; the pending operation then
  // fails and Fail() counts a timeout. Its period bounds how late a timeout is noticed.
  void ArmSweep() {
    const nanoseconds period = std::clamp<nanoseconds>(timeout_ / 10, std::chrono::milliseconds(1),
                                                       std::chrono::milliseconds(100));
    sweep_.expires_after(period);
    sweep_.async_wait([this](beast::error_code ec) {
      if (ec) return;
      const Clock::time_point now = Clock::now();
      for (auto& c : connections_) {
        if (c->state == Connection::State::kRequest && !c->timed_out && now > c->deadline) {
          c->timed_out = true;
          Close(*c);
        }
      }
      ArmSweep();
    });
  }

  const HttpLoad& load_;
  const ThreadPlan& plan_;
  ThreadStats& stats_;
  const nanoseconds timeout_;
  asio::io_context io_{1};  // before everything that uses it, so destroyed after them
  asio::steady_timer pacer_, sweep_, end_, hard_stop_;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<Connection*> free_;  // open loop: idle connections
  std::uint64_t next_due_ = 0;     // open loop: this thread's next scheduled request
  KeyPicker keys_;
  int active_ = 0;        // connections with a request or a back-off in progress
  bool backlog_ = false;  // open loop: due requests are waiting for a free connection
  bool pacer_armed_ = false;
  bool ending_ = false;
};

void HttpLoad::RunThread(const ThreadPlan& plan, ThreadStats& stats) const {
  HttpThread thread(*this, plan, stats);
  thread.Run();
}

}  // namespace

std::unique_ptr<LoadGenerator> OpenHttp(const LoadOptions& options, std::string& error) {
  // Resolve once, and keep the first address that accepts a connection within the timeout:
  // every connection of the run then goes to it, with no resolver in the request path.
  asio::io_context io;
  beast::error_code ec;
  tcp::resolver resolver(io);
  const auto results = resolver.resolve(options.host, options.port, ec);
  if (ec) {
    error = "cannot resolve " + options.host + ":" + options.port + ": " + ec.message();
    return nullptr;
  }
  error = "cannot connect to " + options.host + ":" + options.port + ": ";
  for (const auto& entry : results) {
    tcp::socket socket(io);
    bool done = false;
    beast::error_code connect_ec;
    socket.async_connect(entry.endpoint(), [&](beast::error_code e) {
      done = true;
      connect_ec = e;
    });
    io.restart();
    io.run_for(options.timeout);
    if (!done) {
      // Timed out: cancel, and let the handler run before its captures go out of scope.
      beast::error_code ignored;
      socket.close(ignored);
      io.restart();
      io.run();
      connect_ec = asio::error::timed_out;
    }
    if (!connect_ec) return std::make_unique<HttpLoad>(options, entry.endpoint());
    error += connect_ec.message() + " (" + entry.endpoint().address().to_string() + ") ";
  }
  return nullptr;
}

}  // namespace sluice::load
