#include "support/redis_harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "support/harness_common.h"

namespace sluice::testing {
namespace {

using harness::Clock;
using harness::DeadlineStream;
using std::chrono::milliseconds;

constexpr auto kClusterCreateTimeout = std::chrono::seconds(60);
constexpr auto kClusterWaitTimeout = std::chrono::seconds(20);
constexpr auto kFailoverTimeout = std::chrono::seconds(30);
constexpr int kSlots = 16384;
constexpr std::size_t kMigrateBatch = 100;
// Redis Cluster's bus port is the client port + 10000.
constexpr int kBusOffset = 10000;
constexpr const char* kTempPrefix = "sluice-redis-";

std::string redis_server_bin() {
  return harness::env_or("SLUICE_REDIS_SERVER", "/usr/bin/redis-server");
}
std::string redis_cli_bin() {
  return harness::env_or("SLUICE_REDIS_CLI", "/usr/bin/redis-cli");
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i != 0) out += sep;
    out += parts[i];
  }
  return out;
}

// ---- RESP over a socket ----------------------------------------------------------------------

class Connection {
 public:
  explicit Connection(DeadlineStream stream) : stream_(std::move(stream)) {}

  void write_all(const std::string& data) { stream_.write_all(data); }

  Reply read_reply(int depth = 0) {
    if (depth > 16) fail("reply nested too deeply");
    const std::string line = stream_.read_line();
    if (line.empty()) fail("empty reply line");
    const std::string rest = line.substr(1);
    Reply reply;
    switch (line[0]) {
      case '+':
        reply.type = Reply::Type::kStatus;
        reply.str = rest;
        return reply;
      case '-':
        reply.type = Reply::Type::kError;
        reply.str = rest;
        return reply;
      case ':':
        reply.type = Reply::Type::kInteger;
        reply.integer = parse_int(rest);
        return reply;
      case '$': {
        const long long len = parse_int(rest);
        if (len < 0) return reply;  // nil
        reply.type = Reply::Type::kBulk;
        reply.str = stream_.read_exact(static_cast<std::size_t>(len) + 2);
        if (reply.str.substr(reply.str.size() - 2) != "\r\n") fail("bulk not terminated by CRLF");
        reply.str.resize(reply.str.size() - 2);
        return reply;
      }
      case '*': {
        const long long n = parse_int(rest);
        if (n < 0) return reply;  // nil array
        reply.type = Reply::Type::kArray;
        reply.elements.reserve(static_cast<std::size_t>(std::min<long long>(n, 1024)));
        for (long long i = 0; i < n; ++i)
          reply.elements.push_back(read_reply(depth + 1));
        return reply;
      }
      default:
        fail("unexpected reply type byte '" + line.substr(0, 1) + "'");
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { stream_.fail(what); }

  long long parse_int(const std::string& s) const {
    try {
      std::size_t used = 0;
      const long long v = std::stoll(s, &used);
      if (used != s.size()) fail("bad integer '" + s + "'");
      return v;
    } catch (const std::logic_error&) {
      fail("bad integer '" + s + "'");
    }
  }

  DeadlineStream stream_;
};

std::string encode(const std::vector<std::string>& argv) {
  std::string out = "*" + std::to_string(argv.size()) + "\r\n";
  for (const auto& a : argv) {
    out += "$" + std::to_string(a.size()) + "\r\n";
    out += a;
    out += "\r\n";
  }
  return out;
}

// Sends AUTH (with a password) and the commands in one write; returns the commands' replies (an
// AUTH error replaces them all: they'd all be NOAUTH).
std::vector<Reply> exchange(Connection& conn, const std::vector<std::vector<std::string>>& commands,
                            const std::string& password) {
  std::string out = password.empty() ? "" : encode({"AUTH", password});
  for (const auto& argv : commands)
    out += encode(argv);
  conn.write_all(out);
  const Reply auth = password.empty() ? Reply{} : conn.read_reply();
  std::vector<Reply> replies;
  replies.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i)
    replies.push_back(conn.read_reply());
  if (auth.is_error()) std::fill(replies.begin(), replies.end(), auth);
  return replies;
}

// ---- ports ------------------------------------------------------------------------------------

struct PortInUse : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- cluster parsing --------------------------------------------------------------------------

std::string info_field(const std::string& info, std::string_view key) {
  std::istringstream in(info);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > key.size() && line.compare(0, key.size(), key) == 0 &&
        line[key.size()] == ':') {
      return line.substr(key.size() + 1);
    }
  }
  return "";
}

struct NodeLine {
  std::string id;
  int port = 0;
  std::set<std::string> flags;
  std::string master_id;
  long long config_epoch = 0;
  std::vector<std::pair<int, int>> slots;

  bool has(const char* flag) const { return flags.contains(flag); }
  bool failing() const { return has("fail") || has("fail?"); }
  bool owns(int slot) const {
    return std::any_of(slots.begin(), slots.end(),
                       [slot](const auto& r) { return r.first <= slot && slot <= r.second; });
  }
};

std::vector<NodeLine> parse_cluster_nodes(const std::string& text) {
  std::vector<NodeLine> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    std::string w;
    while (fields >> w)
      f.push_back(w);
    if (f.size() < 8) continue;
    NodeLine n;
    n.id = f[0];
    const std::string addr = f[1].substr(0, f[1].find('@'));
    const std::size_t colon = addr.rfind(':');
    if (colon != std::string::npos) n.port = std::atoi(addr.c_str() + colon + 1);
    std::istringstream flags(f[2]);
    for (std::string fl; std::getline(flags, fl, ',');)
      n.flags.insert(fl);
    n.master_id = f[3];
    n.config_epoch = std::atoll(f[6].c_str());
    for (std::size_t i = 8; i < f.size(); ++i) {
      if (f[i].empty() || f[i][0] == '[') continue;  // [slot->-id] / [slot-<-id]
      const std::size_t dash = f[i].find('-');
      const int lo = std::atoi(f[i].c_str());
      const int hi = dash == std::string::npos ? lo : std::atoi(f[i].c_str() + dash + 1);
      n.slots.emplace_back(lo, hi);
    }
    out.push_back(std::move(n));
  }
  return out;
}

std::string expect_ok(const Reply& r, const std::string& what) {
  if (r.is_error()) throw std::runtime_error(what + " failed: " + r.str);
  return r.to_string();
}

}  // namespace

// ---- Reply ------------------------------------------------------------------------------------

std::string Reply::to_string() const {
  switch (type) {
    case Type::kStatus:
    case Type::kBulk:
      return str;
    case Type::kError:
      return "ERR:" + str;
    case Type::kInteger:
      return std::to_string(integer);
    case Type::kNil:
      return "(nil)";
    case Type::kArray: {
      std::vector<std::string> parts;
      parts.reserve(elements.size());
      for (const auto& e : elements)
        parts.push_back(e.to_string());
      return join(parts, " ");
    }
  }
  return "";
}

std::vector<Reply> redis_pipeline(const std::string& host, int port,
                                  const std::vector<std::vector<std::string>>& commands,
                                  std::chrono::milliseconds timeout, const std::string& password) {
  const auto deadline = Clock::now() + timeout;
  Connection conn(DeadlineStream::connect_tcp(host, port, deadline,
                                              "redis " + host + ":" + std::to_string(port)));
  return exchange(conn, commands, password);
}

Reply redis_call(const std::string& host, int port, const std::vector<std::string>& argv,
                 std::chrono::milliseconds timeout, const std::string& password) {
  return redis_pipeline(host, port, {argv}, timeout, password).front();
}

Reply redis_call_unix(const std::string& path, const std::vector<std::string>& argv,
                      std::chrono::milliseconds timeout, const std::string& password) {
  const auto deadline = Clock::now() + timeout;
  Connection conn(DeadlineStream::connect_unix(path, deadline, "redis " + path));
  return exchange(conn, {argv}, password).front();
}

// ---- RedisServer ------------------------------------------------------------------------------

RedisServer::RedisServer() : RedisServer(Options{}) {}

RedisServer::RedisServer(Options options) : options_(std::move(options)) {
  dir_ = harness::make_temp_dir(kTempPrefix);
  if (options_.unix_socket) unix_path_ = dir_ + "/redis.sock";
  try {
    start();
  } catch (...) {
    harness::remove_temp_dir(dir_);
    throw;
  }
}

RedisServer::~RedisServer() {
  try {
    stop();
  } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw
  }
  harness::remove_temp_dir(dir_, "SLUICE_KEEP_REDIS_DIRS");
}

void RedisServer::start() {
  const bool fixed = port_ != 0;
  constexpr int kAttempts = 8;
  for (int attempt = 1;; ++attempt) {
    if (!fixed) port_ = harness::pick_port(kBusOffset);
    try {
      start_once();
      return;
    } catch (const PortInUse& e) {
      if (fixed || attempt == kAttempts) throw std::runtime_error(e.what());
    }
  }
}

void RedisServer::start_once() {
  // Only this attempt's part of the log tells why it failed.
  const std::string log_path = dir_ + "/redis.log";
  const std::uintmax_t log_size_before = harness::file_size_or_zero(log_path);
  std::vector<std::string> argv = {redis_server_bin(),
                                   "--port",
                                   std::to_string(port_),
                                   "--bind",
                                   host_,
                                   "--dir",
                                   dir_,
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--daemonize",
                                   "no",
                                   "--logfile",
                                   log_path};
  if (options_.unix_socket) {
    argv.insert(argv.end(), {"--unixsocket", unix_path_, "--unixsocketperm", "700"});
  }
  if (!options_.password.empty()) argv.insert(argv.end(), {"--requirepass", options_.password});
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());

  pid_ = harness::spawn_logged(argv, dir_, dir_ + "/stdout.log");
  paused_ = false;

  const std::string what = "redis-server on " + address() + " (pid " + std::to_string(pid_) + ")";
  const auto deadline = Clock::now() + harness::kStartTimeout;
  std::string last_error = "no attempt";
  for (;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      const std::string msg = what + " " + harness::describe_status(status) +
                              " before answering PING; command: " + harness::show_command(argv) +
                              "\n--- log tail (" + dir_ + ") ---\n" + log_tail();
      const std::string fresh = harness::read_file_from(log_path, log_size_before);
      if (fresh.find("Address already in use") != std::string::npos) throw PortInUse(msg);
      throw std::runtime_error(msg);
    }
    try {
      const Reply pong = call({"PING"}, milliseconds(500));
      if (pong.to_string() == "PONG") {
        // Make sure it is our process answering, not another one that holds the port.
        const Reply info = call({"INFO", "server"}, milliseconds(500));
        if (info_field(info.str, "process_id") == std::to_string(pid_)) return;
        last_error =
            "another process (" + info_field(info.str, "process_id") + ") answers on the port";
      } else {
        last_error = "PING answered " + pong.to_string();
      }
    } catch (const std::runtime_error& e) {
      last_error = e.what();
    }
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(10));
  }
  const std::string log = log_tail();
  kill();
  throw std::runtime_error(
      what + " did not answer PING within " + std::to_string(harness::kStartTimeout.count()) +
      " s (last: " + last_error + "); command: " + harness::show_command(argv) +
      "\n--- log tail (" + dir_ + ") ---\n" + log);
}

bool RedisServer::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_ && (WIFEXITED(status) || WIFSIGNALED(status))) {
    pid_ = -1;
    paused_ = false;
    return false;
  }
  return true;
}

void RedisServer::stop() {
  if (!running()) return;
  ::kill(pid_, SIGTERM);
  if (paused_) ::kill(pid_, SIGCONT);
  paused_ = false;
  const auto deadline = Clock::now() + harness::kStopTimeout;
  while (Clock::now() < deadline) {
    if (!running()) return;
    std::this_thread::sleep_for(milliseconds(5));
  }
  kill();
}

void RedisServer::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  harness::wait_exit(pid_);
  pid_ = -1;
  paused_ = false;
}

void RedisServer::restart() {
  stop();
  start();
}

void RedisServer::pause() {
  if (!running()) throw std::runtime_error("pause: redis-server on " + address() + " not running");
  if (paused_) return;
  ::kill(pid_, SIGSTOP);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WUNTRACED);
    if (r < 0 && errno == EINTR) continue;
    if (r == pid_ && WIFSTOPPED(status)) break;
    if (r == pid_ && (WIFEXITED(status) || WIFSIGNALED(status))) {
      pid_ = -1;
      throw std::runtime_error("pause: redis-server on " + address() + " " +
                               harness::describe_status(status));
    }
    if (r < 0) throw std::runtime_error(harness::errno_text("pause: waitpid"));
  }
  paused_ = true;
}

void RedisServer::resume() {
  if (!paused_ || pid_ <= 0) return;
  ::kill(pid_, SIGCONT);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WCONTINUED);
    if (r < 0 && errno == EINTR) continue;
    if (r == pid_ && WIFCONTINUED(status)) break;
    if (r == pid_ && (WIFEXITED(status) || WIFSIGNALED(status))) {
      pid_ = -1;
      break;
    }
    if (r < 0) throw std::runtime_error(harness::errno_text("resume: waitpid"));
  }
  paused_ = false;
}

Reply RedisServer::call(const std::vector<std::string>& argv,
                        std::chrono::milliseconds timeout) const {
  return redis_call(host_, port_, argv, timeout, options_.password);
}

std::vector<Reply> RedisServer::pipeline(const std::vector<std::vector<std::string>>& commands,
                                         std::chrono::milliseconds timeout) const {
  return redis_pipeline(host_, port_, commands, timeout, options_.password);
}

std::string RedisServer::command(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout) const {
  return call(argv, timeout).to_string();
}

std::string RedisServer::log_tail(std::size_t lines) const {
  return harness::log_tails(dir_ + "/redis.log", dir_ + "/stdout.log", lines);
}

// ---- RedisCluster -----------------------------------------------------------------------------

int RedisCluster::key_slot(std::string_view key) {
  const std::size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const std::size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close != open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  std::uint16_t crc = 0;  // CRC16/XMODEM: poly 0x1021, init 0, no reflection
  for (const char c : key) {
    crc = static_cast<std::uint16_t>(
        crc ^ (static_cast<std::uint16_t>(static_cast<unsigned char>(c)) << 8));
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) != 0 ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021)
                                : static_cast<std::uint16_t>(crc << 1);
    }
  }
  return crc % kSlots;
}

RedisCluster::RedisCluster() : RedisCluster(Options{}) {}

RedisCluster::RedisCluster(Options options) : options_(std::move(options)) {
  if (options_.masters < 3) {
    throw std::runtime_error("RedisCluster: redis-cli --cluster create needs at least 3 masters");
  }
  if (options_.replicas_per_master < 0) {
    throw std::runtime_error("RedisCluster: replicas_per_master must be >= 0");
  }
  const int total = options_.masters * (1 + options_.replicas_per_master);
  RedisServer::Options node_options;
  // Replicas sync at once (the default waits 5 s for more replicas before a diskless sync).
  node_options.extra_args = {"--cluster-enabled",          "yes",
                             "--cluster-config-file",      "nodes.conf",
                             "--cluster-node-timeout",     std::to_string(options_.node_timeout_ms),
                             "--repl-diskless-sync-delay", "0"};
  node_options.extra_args.insert(node_options.extra_args.end(), options_.extra_args.begin(),
                                 options_.extra_args.end());
  std::vector<std::string> argv = {redis_cli_bin(), "--cluster", "create"};
  for (int i = 0; i < total; ++i) {
    RedisServer::Options node = node_options;
    if (static_cast<std::size_t>(i) < options_.node_args.size()) {
      const auto& own = options_.node_args[static_cast<std::size_t>(i)];
      node.extra_args.insert(node.extra_args.end(), own.begin(), own.end());
    }
    nodes_.push_back(std::make_unique<RedisServer>(std::move(node)));
    argv.push_back(nodes_.back()->address());
  }
  argv.insert(argv.end(), {"--cluster-replicas", std::to_string(options_.replicas_per_master),
                           "--cluster-yes"});
  const harness::ProcessResult created = harness::run_process(
      argv, std::chrono::duration_cast<std::chrono::seconds>(kClusterCreateTimeout));
  if (!WIFEXITED(created.status) || WEXITSTATUS(created.status) != 0) {
    throw std::runtime_error("`" + harness::show_command(argv) + "` " +
                             harness::describe_status(created.status) + "; output:\n" +
                             created.output);
  }
  for (auto& n : nodes_)
    ids_.push_back(expect_ok(n->call({"CLUSTER", "MYID"}), "CLUSTER MYID"));

  // Every node: state ok, all slots, knows every node; every replica: link to its master up.
  const auto deadline = Clock::now() + kClusterWaitTimeout;
  std::string last;
  for (;;) {
    last.clear();
    for (std::size_t i = 0; i < nodes_.size() && last.empty(); ++i) {
      try {
        const std::string info = nodes_[i]->call({"CLUSTER", "INFO"}).str;
        if (info_field(info, "cluster_state") != "ok" ||
            info_field(info, "cluster_slots_assigned") != std::to_string(kSlots) ||
            info_field(info, "cluster_known_nodes") != std::to_string(total)) {
          last = "node " + std::to_string(i) + ": " + info;
          break;
        }
        const Reply role = nodes_[i]->call({"ROLE"});
        if (role.type == Reply::Type::kArray && role.elements.size() >= 4 &&
            role.elements[0].str == "slave" && role.elements[3].str != "connected") {
          last = "replica " + std::to_string(i) + ": " + role.to_string();
        }
      } catch (const std::runtime_error& e) {
        last = e.what();
      }
    }
    if (last.empty()) return;
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  throw std::runtime_error("cluster did not converge within " +
                           std::to_string(kClusterWaitTimeout.count()) + " s; last: " + last +
                           "\nredis-cli output:\n" + created.output);
}

RedisCluster::~RedisCluster() {
  // The data is disposable: SIGKILL is quickest (and a SIGTERMed master may wait for replicas).
  for (auto& n : nodes_)
    n->kill();
}

std::size_t RedisCluster::index_of_id(const std::string& id) const {
  for (std::size_t i = 0; i < ids_.size(); ++i) {
    if (ids_[i] == id) return i;
  }
  return nodes_.size();  // not ours (e.g. a node in handshake)
}

std::size_t RedisCluster::any_running_node() {
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i]->running() && !nodes_[i]->paused()) return i;
  }
  throw std::runtime_error("no cluster node is running");
}

std::vector<std::size_t> RedisCluster::masters() {
  const std::size_t asked = any_running_node();
  const Reply r = nodes_[asked]->call({"CLUSTER", "NODES"});
  std::vector<std::size_t> out;
  for (const NodeLine& n : parse_cluster_nodes(expect_ok(r, "CLUSTER NODES"))) {
    if (!n.has("master") || n.failing()) continue;
    const std::size_t i = index_of_id(n.id);
    if (i < nodes_.size() && nodes_[i]->running()) out.push_back(i);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::size_t> RedisCluster::replicas_of(std::size_t master) {
  const std::size_t asked = any_running_node();
  const Reply r = nodes_[asked]->call({"CLUSTER", "NODES"});
  std::vector<std::size_t> out;
  for (const NodeLine& n : parse_cluster_nodes(expect_ok(r, "CLUSTER NODES"))) {
    if (!n.has("slave") || n.master_id != ids_.at(master)) continue;
    const std::size_t i = index_of_id(n.id);
    if (i < nodes_.size() && nodes_[i]->running()) out.push_back(i);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string RedisCluster::seeds() {
  std::vector<std::string> parts;
  for (const std::size_t i : masters())
    parts.push_back(nodes_[i]->address());
  return join(parts, ",");
}

std::size_t RedisCluster::owner_of_slot(int slot) {
  if (slot < 0 || slot >= kSlots) throw std::runtime_error("slot out of range");
  std::size_t best = nodes_.size();
  long long best_epoch = -1;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (!nodes_[i]->running() || nodes_[i]->paused()) continue;
    const Reply r = nodes_[i]->call({"CLUSTER", "NODES"});
    for (const NodeLine& n : parse_cluster_nodes(expect_ok(r, "CLUSTER NODES"))) {
      if (n.has("myself") && n.has("master") && n.owns(slot) && n.config_epoch > best_epoch) {
        best = i;
        best_epoch = n.config_epoch;
      }
    }
  }
  if (best != nodes_.size()) return best;
  // Nobody running claims it: report what a running node believes.
  const std::size_t asked = any_running_node();
  const Reply slots = nodes_[asked]->call({"CLUSTER", "SLOTS"});
  for (const Reply& range : slots.elements) {
    if (range.elements.size() < 3 || range.elements[0].integer > slot ||
        range.elements[1].integer < slot) {
      continue;
    }
    const Reply& master = range.elements[2];
    if (master.elements.size() >= 3 && index_of_id(master.elements[2].str) < nodes_.size()) {
      return index_of_id(master.elements[2].str);
    }
  }
  throw std::runtime_error("no node owns slot " + std::to_string(slot));
}

void RedisCluster::wait_until_all_agree_on_owner(int slot, std::size_t owner) {
  const auto deadline = Clock::now() + kClusterWaitTimeout;
  std::string last;
  for (;;) {
    last.clear();
    for (std::size_t i = 0; i < nodes_.size() && last.empty(); ++i) {
      if (!nodes_[i]->running() || nodes_[i]->paused()) continue;
      try {
        const Reply r = nodes_[i]->call({"CLUSTER", "NODES"});
        for (const NodeLine& n : parse_cluster_nodes(expect_ok(r, "CLUSTER NODES"))) {
          if (n.id == ids_[owner] && !n.owns(slot)) {
            last = "node " + std::to_string(i) + " does not see slot " + std::to_string(slot) +
                   " on node " + std::to_string(owner) + ":\n" + r.str;
          }
        }
      } catch (const std::runtime_error& e) {
        last = e.what();
      }
    }
    if (last.empty()) return;
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  throw std::runtime_error("cluster did not agree on the owner of slot " + std::to_string(slot) +
                           " within " + std::to_string(kClusterWaitTimeout.count()) +
                           " s; last: " + last);
}

void RedisCluster::begin_migration(int slot, std::size_t to) {
  if (slot < 0 || slot >= kSlots) throw std::runtime_error("slot out of range");
  if (to >= nodes_.size())
    throw std::runtime_error("begin_migration: no node " + std::to_string(to));
  if (migrations_.contains(slot)) {
    throw std::runtime_error("slot " + std::to_string(slot) + " is already being migrated");
  }
  const std::size_t from = owner_of_slot(slot);
  if (from == to) {
    throw std::runtime_error("begin_migration: node " + std::to_string(to) + " already owns slot " +
                             std::to_string(slot));
  }
  const std::string s = std::to_string(slot);
  expect_ok(nodes_[to]->call({"CLUSTER", "SETSLOT", s, "IMPORTING", ids_[from]}),
            "CLUSTER SETSLOT " + s + " IMPORTING on node " + std::to_string(to));
  expect_ok(nodes_[from]->call({"CLUSTER", "SETSLOT", s, "MIGRATING", ids_[to]}),
            "CLUSTER SETSLOT " + s + " MIGRATING on node " + std::to_string(from));
  migrations_[slot] = Migration{from, to};
}

std::size_t RedisCluster::move_keys(int slot, std::size_t n) {
  const auto it = migrations_.find(slot);
  if (it == migrations_.end()) {
    throw std::runtime_error("move_keys: slot " + std::to_string(slot) + " is not being migrated");
  }
  RedisServer& src = *nodes_[it->second.from];
  RedisServer& dst = *nodes_[it->second.to];
  std::size_t moved = 0;
  while (moved < n) {
    const std::size_t batch = std::min(kMigrateBatch, n - moved);
    const Reply keys =
        src.call({"CLUSTER", "GETKEYSINSLOT", std::to_string(slot), std::to_string(batch)});
    expect_ok(keys, "CLUSTER GETKEYSINSLOT");
    if (keys.elements.empty()) break;
    std::vector<std::string> argv = {"MIGRATE", dst.host(), std::to_string(dst.port()), "", "0",
                                     "5000",    "KEYS"};
    for (const Reply& k : keys.elements)
      argv.push_back(k.str);
    expect_ok(src.call(argv, milliseconds(10000)), "MIGRATE of slot " + std::to_string(slot));
    moved += keys.elements.size();
  }
  return moved;
}

void RedisCluster::finish_migration(int slot) {
  const auto it = migrations_.find(slot);
  if (it == migrations_.end()) {
    throw std::runtime_error("finish_migration: slot " + std::to_string(slot) +
                             " is not being migrated");
  }
  const Migration m = it->second;
  const std::string s = std::to_string(slot);
  move_keys(slot, std::numeric_limits<std::size_t>::max());
  const Reply left = nodes_[m.from]->call({"CLUSTER", "COUNTKEYSINSLOT", s});
  if (left.is_error() || left.integer != 0) {
    throw std::runtime_error("finish_migration: node " + std::to_string(m.from) + " still has " +
                             left.to_string() + " keys in slot " + s);
  }
  const std::vector<std::string> setslot = {"CLUSTER", "SETSLOT", s, "NODE", ids_[m.to]};
  expect_ok(nodes_[m.to]->call(setslot), "CLUSTER SETSLOT " + s + " NODE on the target");
  expect_ok(nodes_[m.from]->call(setslot), "CLUSTER SETSLOT " + s + " NODE on the source");
  for (const std::size_t i : masters()) {
    if (i == m.to || i == m.from) continue;
    expect_ok(nodes_[i]->call(setslot),
              "CLUSTER SETSLOT " + s + " NODE on node " + std::to_string(i));
  }
  migrations_.erase(slot);
  wait_until_all_agree_on_owner(slot, m.to);
}

void RedisCluster::migrate_slot(int slot, std::size_t to) {
  if (owner_of_slot(slot) == to) return;
  begin_migration(slot, to);
  finish_migration(slot);
}

void RedisCluster::wait_for_ok(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string last;
  for (;;) {
    last.clear();
    for (std::size_t i = 0; i < nodes_.size() && last.empty(); ++i) {
      if (!nodes_[i]->running() || nodes_[i]->paused()) continue;
      try {
        const std::string info = nodes_[i]->call({"CLUSTER", "INFO"}).str;
        if (info_field(info, "cluster_state") != "ok" ||
            info_field(info, "cluster_slots_assigned") != std::to_string(kSlots)) {
          last = "node " + std::to_string(i) + ": " + info;
        }
      } catch (const std::runtime_error& e) {
        last = e.what();
      }
    }
    if (last.empty()) return;
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  throw std::runtime_error("cluster not ok within " + std::to_string(timeout.count()) +
                           " ms; last: " + last);
}

std::size_t RedisCluster::kill_master_and_wait_for_failover(std::size_t master) {
  if (master >= nodes_.size()) throw std::runtime_error("no node " + std::to_string(master));
  // Right after the cluster forms, the node asked may not list the replica yet: wait (bounded).
  std::vector<std::size_t> replicas = replicas_of(master);
  for (const auto until = Clock::now() + std::chrono::seconds(10);
       replicas.empty() && Clock::now() < until;) {
    std::this_thread::sleep_for(milliseconds(50));
    replicas = replicas_of(master);
  }
  if (replicas.empty()) {
    throw std::runtime_error("node " + std::to_string(master) + " has no running replica");
  }
  nodes_[master]->kill();
  const auto deadline = Clock::now() + kFailoverTimeout;
  std::string last;
  for (;;) {
    for (const std::size_t r : replicas) {
      try {
        const Reply role = nodes_[r]->call({"ROLE"});
        if (role.type != Reply::Type::kArray || role.elements.empty() ||
            role.elements[0].str != "master") {
          last = "replica " + std::to_string(r) + " role: " + role.to_string();
          continue;
        }
        // Promoted; wait for every running node to see it as a master and the cluster ok.
        wait_for_ok(std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
        const std::vector<std::size_t> now_masters = masters();
        if (std::find(now_masters.begin(), now_masters.end(), r) == now_masters.end()) {
          last = "node " + std::to_string(r) + " not yet seen as a master";
          continue;
        }
        return r;
      } catch (const std::runtime_error& e) {
        last = e.what();
      }
    }
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  std::string logs;
  for (const std::size_t r : replicas) {
    logs += "\n--- node " + std::to_string(r) + " log tail ---\n" + nodes_[r]->log_tail(15);
  }
  throw std::runtime_error("no replica of node " + std::to_string(master) + " took over within " +
                           std::to_string(kFailoverTimeout.count()) + " s; last: " + last + logs);
}

}  // namespace sluice::testing
