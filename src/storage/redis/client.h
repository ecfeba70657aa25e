// A pipelined Redis client: hiredis's command formatting and reply reader, driven by Boost.Asio.
//
// Many threads call command() at once; their commands are written back-to-back on a few
// connections (a small pool) and the replies are matched to callers in order, so N concurrent
// callers cost about one round trip, not N. One I/O thread runs the connections.
//
// Every call is bounded by the command timeout: a dead or paused server never blocks a caller
// (or delays an asynchronous command's completion) longer than that. A broken connection fails
// its pending commands and is re-opened with exponential backoff; while it is down, calls fail
// at once (kUnavailable) instead of waiting.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/redis_store.h"
#include "sluice/store.h"

namespace sluice::redis {

// Reply is one parsed RESP reply, owned.
struct Reply {
  enum class Type : std::uint8_t { kNil, kStatus, kError, kInteger, kString, kArray };
  Type type = Type::kNil;
  std::int64_t integer = 0;
  std::string str;              // kStatus, kError, kString
  std::vector<Reply> elements;  // kArray

  bool is_error() const noexcept { return type == Type::kError; }
};

// ReplyReader parses RESP from a byte stream into Reply trees (the client's reader, hiredis's
// parser building Replies directly). Feed bytes as they arrive; next() returns each complete
// reply. A protocol error (or a reply nested deeper than the parser allows) is final: feed() and
// next() then keep failing with the same message.
class ReplyReader {
 public:
  ReplyReader();
  ~ReplyReader();
  ReplyReader(const ReplyReader&) = delete;
  ReplyReader& operator=(const ReplyReader&) = delete;

  // feed() appends bytes; false (with `error`) on a protocol error.
  bool feed(std::string_view bytes, std::string& error);
  // next() moves the next complete reply into `out`: 1 when there was one, 0 when more bytes are
  // needed, -1 (with `error`) on a protocol error.
  int next(Reply& out, std::string& error);

 private:
  void* reader_;  // redisReader
};

// Endpoint is where a server listens: TCP host and port, or a unix socket path.
struct Endpoint {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string unix_path;          // when set, host and port are ignored
  std::string to_string() const;  // "host:port" or "unix:/path"
};

struct ClientOptions {
  Endpoint endpoint;
  std::string username;  // AUTH username password (Redis 6 ACL) when set
  std::string password;  // AUTH password when set
  int database = 0;      // SELECT when not 0
  // TLS over TCP (not for a unix socket): the handshake runs before AUTH, SELECT and PING, within
  // the connect timeout. Bad files make the constructor throw std::runtime_error.
  RedisTlsOptions tls;
  // Connections in the pool; each pipelines many commands.
  std::size_t connections = 2;
  std::chrono::milliseconds connect_timeout{1000};
  // The longest a command may wait for its reply (including time queued while the connection
  // is being written).
  std::chrono::milliseconds command_timeout{1000};
  // Reconnect backoff: doubles from min to max after each failed attempt; resets on success.
  std::chrono::milliseconds reconnect_min{25};
  std::chrono::milliseconds reconnect_max{2000};
};

// CommandResult is a reply, or why there is none (timeout, connection down, protocol error).
// A Redis error reply (e.g. NOSCRIPT, MOVED) is a successful round trip: status ok, reply of
// type kError.
struct CommandResult {
  StoreStatus status;
  Reply reply;
};

// ClientStats counts the client's traffic since it was created.
struct ClientStats {
  std::uint64_t commands = 0;  // commands written (connection handshakes not counted)
  std::uint64_t batches = 0;   // writes that carried them; commands / batches is the pipelining
  std::uint64_t connects = 0;  // connections established (first connects and reconnects)
};

// Completion receives the result of a command sent with Client::command_async().
class Completion {
 public:
  // complete() is called once per command, on the client's I/O thread: it must not block (other
  // connections' replies wait behind it). It may send further commands.
  virtual void complete(CommandResult&& result) noexcept = 0;

 protected:
  ~Completion() = default;
};

class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();  // closes the connections, fails pending commands, joins the I/O thread
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // command() sends one command and waits for its reply.
  CommandResult command(std::span<const std::string_view> argv);
  CommandResult command(std::initializer_list<std::string_view> argv);

  // command_resp() and command_async_resp() send one command already encoded as RESP (a
  // well-formed array of bulk strings, e.g. DecideCall::resp); pipeline_resp() sends `count`
  // such commands, concatenated, on one connection.
  CommandResult command_resp(std::string_view resp);
  void command_async_resp(std::string_view resp, Completion& done);
  std::vector<CommandResult> pipeline_resp(std::string_view resp, std::uint32_t count);

  // command_async() sends one command and returns at once; `done` receives its reply, or why
  // there is none, on the I/O thread (never before command_async() returns), within the command
  // timeout. `done` must stay valid until then.
  void command_async(std::span<const std::string_view> argv, Completion& done);

  // pipeline() sends several commands back-to-back on one connection, in order, and waits for
  // all their replies (e.g. ASKING then EVALSHA, which must share a connection).
  std::vector<CommandResult> pipeline(const std::vector<std::vector<std::string>>& commands);

  // connected() tells whether at least one connection is up now.
  bool connected() const noexcept;
  const ClientOptions& options() const noexcept;
  // stats() reads the counters. Thread-safe.
  ClientStats stats() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::redis
