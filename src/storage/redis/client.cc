// The Redis client: hiredis formats commands and parses replies; Boost.Asio does all the I/O.
//
// Threads and ownership
// - One I/O thread runs `io`. Every socket, timer, reader and the in-flight queue of a
//   connection belong to it.
// - Callers (any thread) format their command(s), append the bytes and one Pending per command
//   to a ready connection's `outbuf`/`queued` under Conn::mu, and wait on their Call. If no write
//   is in flight they post one "kick" to the I/O thread; otherwise the bytes ride along with the
//   next write (pipelining). Replies are matched to Pendings in FIFO order.
// - A Call is owned by its caller while the caller waits. A caller that times out marks the Call
//   abandoned and hands it over to the I/O thread, which frees it once its last reply (or the
//   connection's failure) arrives. Calls are reused per thread, so the hot path allocates only
//   the formatted command.

#include "storage/redis/client.h"

#include <hiredis/hiredis.h>
#include <linux/futex.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

namespace sluice::redis {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using Code = StoreStatus::Code;

std::string Endpoint::to_string() const {
  if (!unix_path.empty()) return "unix:" + unix_path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

namespace {

constexpr std::size_t kReadBufferSize = 64 * 1024;

// tls_context() builds the TLS client context of `tls` (TLS 1.2 or later, the server verified
// against ca_file unless verify is off, the client certificate if given); throws
// std::runtime_error naming the file that cannot be used.
std::unique_ptr<asio::ssl::context> tls_context(const RedisTlsOptions& tls) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  boost::system::error_code ec;
  auto check = [&ec](const char* what, const std::string& file) {
    if (ec) {
      throw std::runtime_error("redis TLS: cannot use " + std::string(what) + " '" + file +
                               "': " + ec.message());
    }
  };
  if (!tls.ca_file.empty()) {
    ctx->load_verify_file(tls.ca_file, ec);
    check("tls_ca", tls.ca_file);
  } else {
    ctx->set_default_verify_paths(ec);
    check("the system's CAs", "");
  }
  if (!tls.cert_file.empty() || !tls.key_file.empty()) {
    if (tls.cert_file.empty() || tls.key_file.empty())
      throw std::runtime_error("redis TLS: tls_cert and tls_key go together");
    ctx->use_certificate_chain_file(tls.cert_file, ec);
    check("tls_cert", tls.cert_file);
    ctx->use_private_key_file(tls.key_file, asio::ssl::context::pem, ec);
    check("tls_key", tls.key_file);
  }
  ctx->set_verify_mode(tls.verify ? asio::ssl::verify_peer : asio::ssl::verify_none);
  return ctx;
}

// Call is one caller's wait for the replies of its command(s).
//
// The hand-off is a small state machine on one futex word instead of a mutex and condition
// variable: the I/O thread takes kBusy while it writes a result, so a caller that times out
// (kWaiting -> kAbandoned) never races with a write into its results.
struct Call {
  enum : std::uint32_t { kWaiting, kBusy, kDone, kAbandoned };
  std::atomic<std::uint32_t> state{kWaiting};
  CommandResult* out = nullptr;  // the caller's results; not touched once abandoned
  std::uint32_t remaining = 0;   // replies still to come; the I/O thread's once submitted
};
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));

// futex_wait() sleeps while `word` holds `expected`, until woken or `deadline` (steady clock,
// which is CLOCK_MONOTONIC, the clock FUTEX_WAIT_BITSET measures absolute timeouts against).
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                Clock::time_point deadline) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch());
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns.count() % 1'000'000'000);
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_BITSET_PRIVATE, expected,
            &ts, nullptr, FUTEX_BITSET_MATCH_ANY);
}

void futex_wake(std::atomic<std::uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 1, nullptr,
            nullptr, 0);
}

// Each thread keeps one Call for reuse; it is handed over (released) when abandoned.
thread_local std::unique_ptr<Call> tl_call;

// Pending is one command awaiting its reply: a waiting caller's (call), an asynchronous one's
// (async), or, with neither, a connection handshake step.
struct Pending {
  Call* call = nullptr;
  Completion* async = nullptr;
  std::uint32_t index = 0;  // into call->out, or the HandshakeStep
  // When the command times out; the I/O thread resets a connection whose oldest command is due.
  Clock::time_point deadline = Clock::time_point::max();

  bool handshake() const noexcept { return call == nullptr && async == nullptr; }
};

enum HandshakeStep : std::uint32_t { kAuth, kSelect, kPing };

const char* step_name(std::uint32_t step) {
  switch (step) {
    case kAuth:
      return "AUTH";
    case kSelect:
      return "SELECT";
    default:
      return "PING";
  }
}

// hiredis's reader builds our Reply tree directly, through these object functions, instead of
// a redisReply tree to convert and free. A child is its parent's element in place; only the root
// is allocated (and freed by hiredis on a protocol error, or by ReplyReader::next()). An array
// grows as its elements arrive, never on the count its header announces, so a few bytes cannot
// make the reader allocate gigabytes. Growing moves only finished siblings: the parent and its
// ancestors, which hiredis points to, stay where they are. Allocation failures return null,
// which hiredis reports as out of memory.
Reply* reply_slot(const redisReadTask* task) {
  if (task->parent != nullptr) {
    std::vector<Reply>& elements = static_cast<Reply*>(task->parent->obj)->elements;
    const auto idx = static_cast<std::size_t>(task->idx);
    if (elements.size() <= idx) elements.resize(idx + 1);
    return &elements[idx];
  }
  return new Reply;
}

// The elements reserved when an array's header arrives, whatever it announces.
constexpr int kReservedElements = 64;

void* create_string(const redisReadTask* task, char* str, std::size_t len) noexcept {
  try {
    Reply* r = reply_slot(task);
    r->type = task->type == REDIS_REPLY_ERROR    ? Reply::Type::kError
              : task->type == REDIS_REPLY_STATUS ? Reply::Type::kStatus
                                                 : Reply::Type::kString;
    r->str.assign(str, len);
    return r;
  } catch (const std::exception&) {
    return nullptr;
  }
}

void* create_array(const redisReadTask* task, int elements) noexcept {
  try {
    Reply* r = reply_slot(task);
    r->type = Reply::Type::kArray;
    r->elements.reserve(static_cast<std::size_t>(std::clamp(elements, 0, kReservedElements)));
    return r;
  } catch (const std::exception&) {
    return nullptr;
  }
}

void* create_integer(const redisReadTask* task, long long value) noexcept {
  try {
    Reply* r = reply_slot(task);
    r->type = Reply::Type::kInteger;
    r->integer = value;
    return r;
  } catch (const std::exception&) {
    return nullptr;
  }
}

void* create_nil(const redisReadTask* task) noexcept {
  try {
    return reply_slot(task);  // kNil
  } catch (const std::exception&) {
    return nullptr;
  }
}

void free_reply(void* reply) noexcept {
  delete static_cast<Reply*>(reply);
}

redisReplyObjectFunctions g_reply_functions = {create_string, create_array, create_integer,
                                               create_nil, free_reply};

// complete() delivers one result to its Call and frees the Call if its caller has left.
// I/O thread only.
void complete(const Pending& p, CommandResult&& result) {
  if (p.async != nullptr) {
    p.async->complete(std::move(result));
    return;
  }
  Call* call = p.call;
  std::uint32_t expected = Call::kWaiting;
  if (!call->state.compare_exchange_strong(expected, Call::kBusy, std::memory_order_acquire)) {
    // Abandoned by its caller: the Call is ours; free it after its last reply.
    if (--call->remaining == 0) delete call;
    return;
  }
  call->out[p.index] = std::move(result);
  if (--call->remaining != 0) {
    call->state.store(Call::kWaiting, std::memory_order_release);
    return;
  }
  call->state.store(Call::kDone, std::memory_order_release);
  // The caller may already have seen kDone and moved on (reusing the Call, or exiting): a wake
  // on the word then is at worst a spurious wake-up, which the waiting loop tolerates.
  futex_wake(call->state);
}

// format() encodes one command with hiredis and appends it to `out`.
bool format(std::span<const std::string_view> argv, std::string& out) {
  constexpr std::size_t kInline = 16;
  const char* ptrs_inline[kInline];
  std::size_t lens_inline[kInline];
  std::vector<const char*> ptrs_heap;
  std::vector<std::size_t> lens_heap;
  const char** ptrs = ptrs_inline;
  std::size_t* lens = lens_inline;
  if (argv.size() > kInline) {
    ptrs_heap.resize(argv.size());
    lens_heap.resize(argv.size());
    ptrs = ptrs_heap.data();
    lens = lens_heap.data();
  }
  for (std::size_t i = 0; i < argv.size(); ++i) {
    ptrs[i] = argv[i].data();
    lens[i] = argv[i].size();
  }
  char* cmd = nullptr;
  const int len = redisFormatCommandArgv(&cmd, static_cast<int>(argv.size()), ptrs, lens);
  if (len < 0 || cmd == nullptr) return false;
  out.append(cmd, static_cast<std::size_t>(len));
  redisFreeCommand(cmd);
  return true;
}

}  // namespace

ReplyReader::ReplyReader() : reader_(redisReaderCreateWithFunctions(&g_reply_functions)) {
  if (reader_ == nullptr) throw std::bad_alloc();
}

ReplyReader::~ReplyReader() {
  redisReaderFree(static_cast<redisReader*>(reader_));
}

bool ReplyReader::feed(std::string_view bytes, std::string& error) {
  auto* r = static_cast<redisReader*>(reader_);
  if (r->err != 0 || redisReaderFeed(r, bytes.data(), bytes.size()) != REDIS_OK) {
    error = std::string("protocol error: ") + r->errstr;
    return false;
  }
  return true;
}

int ReplyReader::next(Reply& out, std::string& error) {
  auto* r = static_cast<redisReader*>(reader_);
  void* reply = nullptr;
  if (r->err != 0 || redisReaderGetReply(r, &reply) != REDIS_OK) {
    error = std::string("protocol error: ") + r->errstr;
    return -1;
  }
  if (reply == nullptr) return 0;
  std::unique_ptr<Reply> owned(static_cast<Reply*>(reply));
  out = std::move(*owned);
  return 1;
}

struct Client::Impl {
  enum class State : std::uint8_t { kDown, kConnecting, kReady, kBroken };

  struct Conn {
    explicit Conn(asio::io_context& io) : socket(io), timer(io), due(io), resolver(io) {}

    // Guarded by mu (gen is written only by the I/O thread, under mu).
    std::mutex mu;
    State state = State::kDown;
    std::uint64_t gen = 0;  // bumped on every connect attempt and close; stale handlers check it
    std::string outbuf;     // formatted commands not yet handed to a write
    std::vector<Pending> queued;  // their Pendings, in order
    bool write_active = false;    // a write is in flight or a kick is posted
    std::string last_error;
    std::atomic<bool> ready{false};  // mirrors state == kReady for connected()

    // I/O thread only.
    asio::generic::stream_protocol::socket socket;
    // With TLS, the stream over `socket` that reads and writes go through, made anew on each
    // connect. (An old one is replaced only once the socket has been closed and a new connection
    // made, long after its aborted operations have returned.)
    std::optional<asio::ssl::stream<asio::generic::stream_protocol::socket&>> tls;
    asio::steady_timer timer;  // connect deadline while connecting, backoff while down
    asio::steady_timer due;    // the oldest command's deadline while commands are out
    bool due_armed = false;
    asio::ip::tcp::resolver resolver;
    std::string writing;           // the batch being written
    std::deque<Pending> inflight;  // written (or being written), awaiting replies
    std::unique_ptr<ReplyReader> reader;
    std::unique_ptr<char[]> rbuf{new char[kReadBufferSize]};
    std::chrono::milliseconds backoff{0};
    bool first_attempt = true;
  };

  explicit Impl(ClientOptions o)
      : options(std::move(o)), name("redis " + options.endpoint.to_string()) {
    if (options.tls.enabled) {
      if (!options.endpoint.unix_path.empty())
        throw std::runtime_error("redis TLS: not over a unix socket");
      tls_ctx = tls_context(options.tls);
    }
    const std::size_t n = std::max<std::size_t>(1, options.connections);
    for (std::size_t i = 0; i < n; ++i) {
      conns.push_back(std::make_unique<Conn>(io));
      conns.back()->backoff = min_backoff();
    }
    initial_left = n;
    asio::post(io, [this] {
      for (auto& c : conns)
        start_connect(*c);
    });
    thread = std::thread([this] { io.run(); });
    // Give the first connection attempts a chance, so a fresh client can be used at once.
    std::unique_lock lock(initial_mu);
    initial_cv.wait_for(lock, options.connect_timeout + std::chrono::milliseconds(100),
                        [this] { return initial_left == 0; });
  }

  ~Impl() {
    asio::post(io, [this] {
      stopping = true;
      for (auto& c : conns)
        fail(*c, Code::kUnavailable, "client shut down");
      work.reset();
      io.stop();
    });
    thread.join();
  }

  // ---- callers -------------------------------------------------------------------------------

  // submit() sends `n` formatted commands on one connection and waits for their replies in
  // out[0, n).
  void submit(std::string_view bytes, std::uint32_t n, CommandResult* out) {
    const auto deadline = Clock::now() + options.command_timeout;
    if (!tl_call) tl_call = std::make_unique<Call>();
    Call* call = tl_call.get();
    call->state.store(Call::kWaiting, std::memory_order_relaxed);
    call->out = out;
    call->remaining = n;
    // Until a result arrives it reads "timed out" (without a message: delivered failures have one).
    for (std::uint32_t k = 0; k < n; ++k)
      out[k].status.code = Code::kTimeout;

    Conn* conn = nullptr;
    std::uint64_t gen = 0;
    bool kick = false;
    std::string why;
    const std::size_t start = next.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t i = 0; i < conns.size() && conn == nullptr; ++i) {
      Conn& c = *conns[(start + i) % conns.size()];
      std::lock_guard lock(c.mu);
      if (c.state != State::kReady) {
        if (why.empty()) why = c.last_error;
        continue;
      }
      c.outbuf.append(bytes);
      for (std::uint32_t k = 0; k < n; ++k)
        c.queued.push_back(Pending{call, nullptr, k, deadline});
      if (!c.write_active) kick = c.write_active = true;
      conn = &c;
      gen = c.gen;
    }
    if (conn == nullptr) {
      std::string message = name + ": not connected";
      if (!why.empty()) message += ": " + why;
      for (std::uint32_t k = 0; k < n; ++k)
        out[k].status = {Code::kUnavailable, message};
      return;
    }
    if (kick) {
      asio::post(io, [this, conn, gen] {
        if (conn->gen == gen) write_next(*conn);
      });
    }

    if (wait(*call, deadline)) return;
    // Timed out: the Call now belongs to the I/O thread (do not touch it again), which no longer
    // writes into `out`. Results that did arrive (a pipeline's first replies) stay.
    (void)tl_call.release();
    const std::string message = name + ": command timed out after " +
                                std::to_string(options.command_timeout.count()) + " ms";
    for (std::uint32_t k = 0; k < n; ++k) {
      if (out[k].status.code == Code::kTimeout && out[k].status.message.empty())
        out[k].status.message = message;
    }
    mark_broken(*conn, gen, message);
  }

  // submit_async() sends one formatted command on a ready connection; its result goes to `done`
  // on the I/O thread.
  void submit_async(std::string_view bytes, Completion& done) {
    const auto deadline = Clock::now() + options.command_timeout;
    std::string why;
    const std::size_t start = next.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t i = 0; i < conns.size(); ++i) {
      Conn& c = *conns[(start + i) % conns.size()];
      bool kick = false;
      std::uint64_t gen = 0;
      {
        std::lock_guard lock(c.mu);
        if (c.state != State::kReady) {
          if (why.empty()) why = c.last_error;
          continue;
        }
        c.outbuf.append(bytes);
        c.queued.push_back(Pending{nullptr, &done, 0, deadline});
        if (!c.write_active) kick = c.write_active = true;
        gen = c.gen;
      }
      if (kick) {
        if (io.get_executor().running_in_this_thread()) {
          // From a completion: write now, so that Redis has the next call while it still runs
          // the ones before it (a posted write would leave with the replies handled after it).
          write_next(c);
        } else {
          asio::post(io, [this, &c, gen] {
            if (c.gen == gen) write_next(c);
          });
        }
      }
      return;
    }
    std::string message = name + ": not connected";
    if (!why.empty()) message += ": " + why;
    asio::post(io, [&done, message = std::move(message)] {
      done.complete(CommandResult{StoreStatus{Code::kUnavailable, message}, Reply{}});
    });
  }

  // wait() waits for the Call until `deadline`: true when all its replies are in, false when it
  // timed out and was abandoned.
  static bool wait(Call& call, Clock::time_point deadline) {
    for (;;) {
      std::uint32_t s = call.state.load(std::memory_order_acquire);
      if (s == Call::kDone) return true;
      if (s == Call::kWaiting && Clock::now() >= deadline) {
        // Release: the I/O thread that sees kAbandoned frees the Call, so everything this
        // thread did with it must happen before that.
        if (call.state.compare_exchange_strong(s, Call::kAbandoned, std::memory_order_acq_rel))
          return false;
        continue;  // a reply is being delivered just now
      }
      if (s == Call::kBusy) {
        std::this_thread::yield();
        continue;
      }
      futex_wait(call.state, Call::kWaiting, deadline);
    }
  }

  // mark_broken() takes a connection whose command timed out out of service (new calls skip it
  // at once) and has the I/O thread close and reopen it.
  void mark_broken(Conn& c, std::uint64_t gen, const std::string& why) {
    {
      std::lock_guard lock(c.mu);
      if (c.gen != gen || c.state != State::kReady) return;
      c.state = State::kBroken;
      c.ready.store(false, std::memory_order_relaxed);
      c.last_error = why + "; reconnecting";
    }
    asio::post(io, [this, &c, gen, why] {
      if (c.gen == gen) fail(c, Code::kTimeout, why + "; connection reset");
    });
  }

  // ---- I/O thread ----------------------------------------------------------------------------

  void start_connect(Conn& c) {
    std::uint64_t gen;
    {
      std::lock_guard lock(c.mu);
      c.state = State::kConnecting;
      gen = ++c.gen;
    }
    c.timer.expires_after(options.connect_timeout);
    c.timer.async_wait([this, &c, gen](const boost::system::error_code& ec) {
      if (ec || c.gen != gen) return;
      fail(c, Code::kUnavailable,
           "connect timed out after " + std::to_string(options.connect_timeout.count()) + " ms");
    });

    const Endpoint& ep = options.endpoint;
    if (!ep.unix_path.empty()) {
      std::vector<asio::generic::stream_protocol::endpoint> endpoints;
      try {
        endpoints.emplace_back(asio::local::stream_protocol::endpoint(ep.unix_path));
      } catch (const std::exception& e) {
        fail(c, Code::kUnavailable, std::string("bad unix socket path: ") + e.what());
        return;
      }
      connect(c, gen, std::move(endpoints));
      return;
    }
    c.resolver.async_resolve(ep.host, std::to_string(ep.port),
                             [this, &c, gen](const boost::system::error_code& ec,
                                             const asio::ip::tcp::resolver::results_type& results) {
                               if (c.gen != gen) return;
                               if (ec) {
                                 fail(c, Code::kUnavailable,
                                      "resolve " + options.endpoint.host + ": " + ec.message());
                                 return;
                               }
                               std::vector<asio::generic::stream_protocol::endpoint> endpoints;
                               for (const auto& entry : results)
                                 endpoints.emplace_back(entry.endpoint());
                               connect(c, gen, std::move(endpoints));
                             });
  }

  void connect(Conn& c, std::uint64_t gen,
               std::vector<asio::generic::stream_protocol::endpoint> endpoints) {
    asio::async_connect(c.socket, endpoints,
                        [this, &c, gen](const boost::system::error_code& ec,
                                        const asio::generic::stream_protocol::endpoint&) {
                          if (c.gen != gen) return;
                          if (ec) {
                            fail(c, Code::kUnavailable, "connect: " + ec.message());
                            return;
                          }
                          on_connected(c, gen);
                        });
  }

  // on_connected() runs the TLS handshake, if TLS is on, then the Redis one (AUTH, SELECT, PING);
  // all within the connect timeout (start_connect()'s timer).
  void on_connected(Conn& c, std::uint64_t gen) {
    if (options.endpoint.unix_path.empty()) {
      boost::system::error_code ignored;
      c.socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    }
    if (!tls_ctx) {
      c.tls.reset();
      send_handshake(c, gen);
      return;
    }
    c.tls.emplace(c.socket, *tls_ctx);
    SSL* ssl = c.tls->native_handle();
    const std::string& peer =
        options.tls.server_name.empty() ? options.endpoint.host : options.tls.server_name;
    boost::system::error_code not_ip;
    asio::ip::make_address(peer, not_ip);
    if (not_ip) {
      // A DNS name: sent as SNI, and the certificate must name it (a SAN, or the CN).
      // SSL_set_tlsext_host_name() itself, without its macro's old-style cast.
      SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
               const_cast<char*>(peer.c_str()));
      SSL_set1_host(ssl, peer.c_str());
    } else {
      // An address: the certificate must hold it as an IP SAN.
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), peer.c_str());
    }
    c.tls->async_handshake(asio::ssl::stream_base::client,
                           [this, &c, gen](const boost::system::error_code& ec) {
                             if (c.gen != gen) return;
                             if (ec) {
                               fail(c, Code::kUnavailable, tls_failure(c, ec));
                               return;
                             }
                             send_handshake(c, gen);
                           });
  }

  // tls_failure() says why a TLS handshake failed, with the certificate check's verdict when that
  // was the reason (an unknown CA, a name mismatch, an expired certificate).
  static std::string tls_failure(Conn& c, const boost::system::error_code& ec) {
    std::string why = "TLS handshake: " + ec.message();
    const long verdict = SSL_get_verify_result(c.tls->native_handle());
    if (verdict != X509_V_OK)
      why += std::string(" (") + X509_verify_cert_error_string(verdict) + ")";
    return why;
  }

  // send_handshake() sends AUTH, SELECT and PING; the connection is ready once PING answers, so
  // a server that accepts but does not answer (paused) never takes commands.
  void send_handshake(Conn& c, std::uint64_t gen) {
    c.reader = std::make_unique<ReplyReader>();
    c.writing.clear();
    if (!options.password.empty()) {
      if (options.username.empty()) {
        const std::string_view argv[] = {"AUTH", options.password};
        format(argv, c.writing);
      } else {
        const std::string_view argv[] = {"AUTH", options.username, options.password};
        format(argv, c.writing);
      }
      c.inflight.push_back(Pending{nullptr, nullptr, kAuth});
    }
    if (options.database != 0) {
      const std::string db = std::to_string(options.database);
      const std::string_view argv[] = {"SELECT", db};
      format(argv, c.writing);
      c.inflight.push_back(Pending{nullptr, nullptr, kSelect});
    }
    const std::string_view ping[] = {"PING"};
    format(ping, c.writing);
    c.inflight.push_back(Pending{nullptr, nullptr, kPing});
    {
      std::lock_guard lock(c.mu);
      c.write_active = true;
    }
    write(c, gen);
    read(c, gen);
  }

  void on_handshake_reply(Conn& c, std::uint32_t step, const Reply& r) {
    if (r.is_error()) {
      fail(c, Code::kUnavailable, std::string(step_name(step)) + " failed: " + r.str);
      return;
    }
    if (step != kPing) return;
    {
      std::lock_guard lock(c.mu);
      c.state = State::kReady;
      c.last_error.clear();
      c.ready.store(true, std::memory_order_relaxed);
    }
    c.timer.cancel();
    c.backoff = min_backoff();
    connects.fetch_add(1, std::memory_order_relaxed);
    first_attempt_done(c);
  }

  std::chrono::milliseconds min_backoff() const {
    return std::max(options.reconnect_min, std::chrono::milliseconds(1));
  }

  void first_attempt_done(Conn& c) {
    if (!c.first_attempt) return;
    c.first_attempt = false;
    std::lock_guard lock(initial_mu);
    if (--initial_left == 0) initial_cv.notify_all();
  }

  // write_next() hands everything queued so far to one write, or ends the write loop.
  void write_next(Conn& c) {
    std::size_t n;
    {
      std::lock_guard lock(c.mu);
      if (c.outbuf.empty()) {
        c.write_active = false;
        return;
      }
      c.writing.clear();
      c.writing.swap(c.outbuf);
      n = c.queued.size();
      c.inflight.insert(c.inflight.end(), c.queued.begin(), c.queued.end());
      c.queued.clear();
    }
    commands.fetch_add(n, std::memory_order_relaxed);
    batches.fetch_add(1, std::memory_order_relaxed);
    write(c, c.gen);
    if (!c.due_armed) watch_due(c, c.gen);
  }

  // watch_due() waits for the deadline of the oldest command out on `c`; a connection whose
  // oldest command is due is reset, failing all its commands with kTimeout (a waiting caller
  // gives up on its own at the same deadline). Commands are answered in order, so the oldest
  // one's deadline is the first to pass.
  void watch_due(Conn& c, std::uint64_t gen) {
    const auto oldest = std::find_if(c.inflight.begin(), c.inflight.end(),
                                     [](const Pending& p) { return !p.handshake(); });
    if (oldest == c.inflight.end()) {
      c.due_armed = false;
      return;
    }
    if (oldest->deadline <= Clock::now()) {
      c.due_armed = false;
      fail(c, Code::kTimeout,
           "command timed out after " + std::to_string(options.command_timeout.count()) +
               " ms; connection reset");
      return;
    }
    c.due_armed = true;
    c.due.expires_at(oldest->deadline);
    c.due.async_wait([this, &c, gen](const boost::system::error_code& ec) {
      if (ec || c.gen != gen) return;  // fail() cancelled it and cleared due_armed
      watch_due(c, gen);
    });
  }

  // on_stream() runs `op` on the connection's stream: the TLS stream or the plain socket.
  template <class Op>
  static void on_stream(Conn& c, Op&& op) {
    if (c.tls)
      op(*c.tls);
    else
      op(c.socket);
  }

  void write(Conn& c, std::uint64_t gen) {
    on_stream(c, [&](auto& stream) {
      asio::async_write(stream, asio::buffer(c.writing),
                        [this, &c, gen](const boost::system::error_code& ec, std::size_t) {
                          if (c.gen != gen) return;
                          if (ec) {
                            fail(c, Code::kUnavailable, "write: " + ec.message());
                            return;
                          }
                          write_next(c);
                        });
    });
  }

  void read(Conn& c, std::uint64_t gen) {
    on_stream(c, [&](auto& stream) { read_on(stream, c, gen); });
  }

  template <class Stream>
  void read_on(Stream& stream, Conn& c, std::uint64_t gen) {
    stream.async_read_some(
        asio::buffer(c.rbuf.get(), kReadBufferSize),
        [this, &c, gen](const boost::system::error_code& ec, std::size_t n) {
          if (c.gen != gen) return;
          if (ec) {
            fail(c, Code::kUnavailable,
                 ec == asio::error::eof || ec == asio::ssl::error::stream_truncated
                     ? std::string("connection closed by the server")
                     : "read: " + ec.message());
            return;
          }
          std::string error;
          if (!c.reader->feed(std::string_view(c.rbuf.get(), n), error)) {
            fail(c, Code::kUnavailable, error);
            return;
          }
          for (;;) {
            Reply reply;
            const int got = c.reader->next(reply, error);
            if (got < 0) {
              fail(c, Code::kUnavailable, error);
              return;
            }
            if (got == 0) break;
            dispatch(c, std::move(reply));
            if (c.gen != gen) return;  // the reply failed the connection
          }
          read(c, gen);
        });
  }

  void dispatch(Conn& c, Reply&& r) {
    if (c.inflight.empty()) {
      fail(c, Code::kUnavailable, "protocol error: a reply nobody asked for");
      return;
    }
    const Pending p = c.inflight.front();
    c.inflight.pop_front();
    if (p.handshake()) {
      on_handshake_reply(c, p.index, r);
      return;
    }
    complete(p, CommandResult{StoreStatus{}, std::move(r)});
  }

  // fail() closes a connection, fails everything sent or queued on it with `code`, and schedules
  // the next connect attempt after the backoff.
  void fail(Conn& c, Code code, const std::string& why) {
    std::vector<Pending> queued;
    {
      std::lock_guard lock(c.mu);
      c.state = State::kDown;
      c.ready.store(false, std::memory_order_relaxed);
      ++c.gen;
      queued.swap(c.queued);
      c.outbuf.clear();
      c.write_active = false;
      c.last_error = why;
    }
    boost::system::error_code ignored;
    c.socket.close(ignored);
    c.timer.cancel();
    c.due.cancel();
    c.due_armed = false;
    c.resolver.cancel();
    c.writing.clear();
    const std::string message = name + ": " + why;
    for (const Pending& p : c.inflight) {
      if (!p.handshake()) complete(p, CommandResult{StoreStatus{code, message}, Reply{}});
    }
    c.inflight.clear();
    for (const Pending& p : queued) {
      complete(p, CommandResult{StoreStatus{Code::kUnavailable, message}, Reply{}});
    }
    first_attempt_done(c);
    if (stopping) return;

    const std::uint64_t gen = c.gen;
    c.timer.expires_after(c.backoff);
    c.backoff = std::max(std::min(c.backoff * 2, options.reconnect_max), min_backoff());
    c.timer.async_wait([this, &c, gen](const boost::system::error_code& ec) {
      if (ec || c.gen != gen) return;
      start_connect(c);
    });
  }

  const ClientOptions options;
  const std::string name;                       // "redis host:port", prefixes every message
  std::unique_ptr<asio::ssl::context> tls_ctx;  // when options.tls.enabled
  asio::io_context io{1};
  // Keeps run() going while a connection waits for nothing (e.g. between handlers).
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::vector<std::unique_ptr<Conn>> conns;
  std::atomic<std::size_t> next{0};  // round robin over conns
  std::atomic<std::uint64_t> commands{0};
  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::uint64_t> connects{0};
  bool stopping = false;  // I/O thread only

  std::mutex initial_mu;
  std::condition_variable initial_cv;
  std::size_t initial_left = 0;

  std::thread thread;
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Client::~Client() = default;

CommandResult Client::command(std::span<const std::string_view> argv) {
  CommandResult result;
  if (argv.empty()) {
    result.status = {Code::kInvalid, "empty command"};
    return result;
  }
  thread_local std::string bytes;
  bytes.clear();
  if (!format(argv, bytes)) {
    result.status = {Code::kInvalid, "cannot format command"};
    return result;
  }
  impl_->submit(bytes, 1, &result);
  return result;
}

void Client::command_async(std::span<const std::string_view> argv, Completion& done) {
  thread_local std::string bytes;
  bytes.clear();
  if (argv.empty() || !format(argv, bytes)) {
    asio::post(impl_->io, [&done] {
      done.complete(
          CommandResult{StoreStatus{Code::kInvalid, "empty or unformattable command"}, Reply{}});
    });
    return;
  }
  impl_->submit_async(bytes, done);
}

CommandResult Client::command_resp(std::string_view resp) {
  CommandResult result;
  impl_->submit(resp, 1, &result);
  return result;
}

void Client::command_async_resp(std::string_view resp, Completion& done) {
  impl_->submit_async(resp, done);
}

std::vector<CommandResult> Client::pipeline_resp(std::string_view resp, std::uint32_t count) {
  std::vector<CommandResult> results(count);
  if (count > 0) impl_->submit(resp, count, results.data());
  return results;
}

CommandResult Client::command(std::initializer_list<std::string_view> argv) {
  return command(std::span<const std::string_view>(argv.begin(), argv.size()));
}

std::vector<CommandResult> Client::pipeline(const std::vector<std::vector<std::string>>& commands) {
  std::vector<CommandResult> results(commands.size());
  if (commands.empty()) return results;
  std::string bytes;
  std::vector<std::string_view> argv;
  for (const auto& command : commands) {
    argv.assign(command.begin(), command.end());
    if (argv.empty() || !format(argv, bytes)) {
      for (auto& r : results)
        r.status = {Code::kInvalid, "empty command in pipeline"};
      return results;
    }
  }
  impl_->submit(bytes, static_cast<std::uint32_t>(commands.size()), results.data());
  return results;
}

bool Client::connected() const noexcept {
  for (const auto& c : impl_->conns) {
    if (c->ready.load(std::memory_order_relaxed)) return true;
  }
  return false;
}

const ClientOptions& Client::options() const noexcept {
  return impl_->options;
}

ClientStats Client::stats() const noexcept {
  return ClientStats{impl_->commands.load(std::memory_order_relaxed),
                     impl_->batches.load(std::memory_order_relaxed),
                     impl_->connects.load(std::memory_order_relaxed)};
}

}  // namespace sluice::redis
