// Real redis-server processes for integration tests: never mocks.
//
// RedisServer forks/execs one redis-server (no persistence) on a free loopback port, in a temp dir
// of its own, and stops it by PID. RedisCluster starts several of them with cluster mode on, forms
// a cluster with `redis-cli --cluster create`, and drives slot migrations and failovers.
//
// The harness talks to Redis itself over a plain socket (minimal RESP), so it depends on nothing
// but the standard library and POSIX. Every wait is bounded; failures throw std::runtime_error with
// the tail of the server's log. The binaries are /usr/bin/redis-server and /usr/bin/redis-cli, or
// $SLUICE_REDIS_SERVER / $SLUICE_REDIS_CLI. Set $SLUICE_KEEP_REDIS_DIRS to keep the servers' temp
// dirs (/tmp/sluice-redis-*, with redis.log) after the test.
//
// Children get PR_SET_PDEATHSIG(SIGKILL): they die with the *thread* that started them, so create
// servers on a thread that outlives them (the test's main thread, typically).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::testing {

// One RESP2 reply.
struct Reply {
  enum class Type { kStatus, kError, kInteger, kBulk, kNil, kArray };
  Type type = Type::kNil;
  std::string str;  // kStatus, kError (without the leading '-'), kBulk
  long long integer = 0;
  std::vector<Reply> elements;  // kArray

  bool is_error() const { return type == Type::kError; }
  // Status and bulk as-is, integer in decimal, nil as "(nil)", error as "ERR:" + the raw error
  // (e.g. "ERR:MOVED 866 127.0.0.1:7000", "ERR:ERR unknown command ..."), arrays as their elements
  // rendered and joined by single spaces (nested arrays flattened).
  std::string to_string() const;
};

inline constexpr std::chrono::milliseconds kDefaultCommandTimeout{5000};

// One command on a fresh connection (TCP or unix socket): optional AUTH, the command, one reply.
// Throws std::runtime_error on connection failure, timeout or a malformed reply; an error reply is
// returned, not thrown.
Reply redis_call(const std::string& host, int port, const std::vector<std::string>& argv,
                 std::chrono::milliseconds timeout = kDefaultCommandTimeout,
                 const std::string& password = "");
// Several commands on one connection (pipelined), one reply each: for what must share a
// connection (SET then WAIT, ASKING then GET, READONLY then GET, MULTI ... EXEC).
std::vector<Reply> redis_pipeline(const std::string& host, int port,
                                  const std::vector<std::vector<std::string>>& commands,
                                  std::chrono::milliseconds timeout = kDefaultCommandTimeout,
                                  const std::string& password = "");
Reply redis_call_unix(const std::string& path, const std::vector<std::string>& argv,
                      std::chrono::milliseconds timeout = kDefaultCommandTimeout,
                      const std::string& password = "");

// Not thread-safe, except call(), command() and pipeline(), which each use a connection of
// their own.
class RedisServer {
 public:
  struct Options {
    // Appended to the command line, e.g. {"--maxmemory", "1mb"}.
    std::vector<std::string> extra_args;
    // Also listen on dir()/redis.sock (TCP stays on).
    bool unix_socket = false;
    // --requirepass; call() and command() authenticate with it.
    std::string password;
  };

  // Starts the server and waits (<= 10 s) until it answers PING; throws std::runtime_error with
  // the log tail otherwise.
  RedisServer();
  explicit RedisServer(Options options);
  ~RedisServer();  // stop(), then removes the temp dir (unless $SLUICE_KEEP_REDIS_DIRS is set)
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  const std::string& host() const { return host_; }  // "127.0.0.1"
  int port() const { return port_; }
  std::string address() const { return host_ + ":" + std::to_string(port_); }  // "host:port"
  const std::string& unix_path() const { return unix_path_; }  // empty unless unix_socket
  const std::string& dir() const { return dir_; }              // the temp dir (also --dir)
  const std::string& password() const { return options_.password; }
  pid_t pid() const { return pid_; }  // -1 when not running
  bool paused() const { return paused_; }
  bool running();  // reaps the process if it has exited

  void stop();     // SIGTERM (+SIGCONT if paused), wait <= 10 s, then SIGKILL. Idempotent.
  void kill();     // SIGKILL and reap. Idempotent.
  void restart();  // stop() if running, start again on the same port and dir, wait for PING
  void pause();    // SIGSTOP; returns once the process is stopped
  void resume();   // SIGCONT; returns once the process has continued

  // One command on a fresh short-lived TCP connection; the reply rendered by Reply::to_string().
  // Throws std::runtime_error on connection failure or timeout.
  std::string command(const std::vector<std::string>& argv,
                      std::chrono::milliseconds timeout = kDefaultCommandTimeout) const;
  // Same, structured.
  Reply call(const std::vector<std::string>& argv,
             std::chrono::milliseconds timeout = kDefaultCommandTimeout) const;
  // Several commands on one connection (see redis_pipeline), e.g. {{"SET", "k", "v"}, {"WAIT",
  // "1", "1000"}}: WAIT counts acks of *this connection's* writes, so it needs the same one.
  std::vector<Reply> pipeline(const std::vector<std::vector<std::string>>& commands,
                              std::chrono::milliseconds timeout = kDefaultCommandTimeout) const;

  // The last lines of the server's log (and of its stdout/stderr), for failure messages.
  std::string log_tail(std::size_t lines = 30) const;

 private:
  void start();  // on port_ (picked if 0); throws on failure
  void start_once();

  Options options_;
  std::string host_ = "127.0.0.1";
  int port_ = 0;
  std::string dir_;
  std::string unix_path_;
  pid_t pid_ = -1;
  bool paused_ = false;
};

class RedisCluster {
 public:
  struct Options {
    int masters = 3;
    int replicas_per_master = 0;
    int node_timeout_ms = 1000;
    std::vector<std::string> extra_args;  // for every node
    // For node i (in creation order: masters first), appended after extra_args; e.g. each
    // node's own --tls-port.
    std::vector<std::vector<std::string>> node_args;
  };

  // Nodes run with --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout
  // node_timeout_ms --repl-diskless-sync-delay 0, then extra_args.
  // Starts masters * (1 + replicas_per_master) nodes, runs `redis-cli --cluster create`, and waits
  // (bounded) until every node reports cluster_state:ok with all 16384 slots assigned, knows every
  // node, and every replica's link to its master is up. Throws std::runtime_error otherwise.
  RedisCluster();
  explicit RedisCluster(Options options);
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  std::size_t size() const { return nodes_.size(); }
  RedisServer& node(std::size_t i) { return *nodes_.at(i); }
  const std::string& node_id(std::size_t i) const { return ids_.at(i); }  // CLUSTER MYID
  // Indices of the nodes that are masters now (as seen by a running node), running ones only.
  std::vector<std::size_t> masters();
  // The replicas of `master` now (as seen by a running node).
  std::vector<std::size_t> replicas_of(std::size_t master);
  // "127.0.0.1:p1,127.0.0.1:p2,..." for masters().
  std::string seeds();

  // The node (index) that serves `slot` now: the running master that claims it in its own
  // CLUSTER NODES line (falling back to a running node's CLUSTER SLOTS view).
  std::size_t owner_of_slot(int slot);
  // CRC16/XMODEM of the key's hash tag (or the whole key), mod 16384, per the cluster spec.
  static int key_slot(std::string_view key);

  // Moves one slot, with its keys, from its owner to node `to` (a master), then waits until every
  // running node sees `to` as the owner. No-op when `to` already owns it.
  void migrate_slot(int slot, std::size_t to);
  // The same, in steps, to act mid-migration:
  //   begin_migration: SETSLOT IMPORTING on `to`, SETSLOT MIGRATING on the owner; no keys moved.
  //   move_keys: migrates up to `n` keys (GETKEYSINSLOT + MIGRATE ... KEYS), returns how many.
  //   finish_migration: moves the rest, SETSLOT NODE on the target, the source and every master,
  //   waits for every running node to agree.
  void begin_migration(int slot, std::size_t to);
  std::size_t move_keys(int slot, std::size_t n);
  void finish_migration(int slot);

  // SIGKILLs `master` (which must have a replica), waits (bounded) until one of its replicas is
  // promoted and every running node reports cluster_state:ok; returns the new master's index.
  // Writes the replica had not received are lost, as in production: to keep a write, send it with
  // WAIT on one connection first (RedisServer::pipeline). node(master).restart() brings the old
  // master back; it rejoins as a replica.
  std::size_t kill_master_and_wait_for_failover(std::size_t master);

  // Waits (bounded) until every running node reports cluster_state:ok and 16384 assigned slots.
  void wait_for_ok(std::chrono::milliseconds timeout = std::chrono::seconds(20));

 private:
  struct Migration {
    std::size_t from;
    std::size_t to;
  };
  std::size_t index_of_id(const std::string& id) const;  // size() if unknown
  std::size_t any_running_node();
  void wait_until_all_agree_on_owner(int slot, std::size_t owner);

  Options options_;
  std::vector<std::unique_ptr<RedisServer>> nodes_;
  std::vector<std::string> ids_;
  std::map<int, Migration> migrations_;
};

}  // namespace sluice::testing
