// RedisClusterStore: the Redis store's script, routed over a Redis Cluster by slot.
//
// Routing
// - The slot map (slot -> master) comes from CLUSTER SLOTS, asked of the known masters, then the
//   seeds, in turn. It is an immutable SlotMap behind a shared_ptr: a decision copies the pointer
//   and reads it without locks; a refresh or a MOVED installs a new one.
// - One Node (a pipelined redis::Client and a CircuitBreaker) per master address, created on
//   first use and dropped once the master no longer owns any slot (after a failover, say).
// - MOVED updates that slot at once, retries on the new owner and marks the map stale; ASK sends
//   ASKING + the script on one connection (Client::pipeline) without touching the map; TRYAGAIN,
//   CLUSTERDOWN and LOADING are retried after a short backoff. Every one of these counts against
//   max_redirects, and the backoffs never sleep past the command timeout.
// - A timeout or lost connection opens that node's breaker and marks the map stale. A stale map
//   is refreshed by the next decision that finds no refresh running, at most once per
//   kRefreshInterval, so while a master is down the map keeps being re-read until it names the
//   promoted replica.
// - The script goes by EVALSHA with its SHA-1, computed here (the same on every node); a node
//   that answers NOSCRIPT (a new master, SCRIPT FLUSH) gets EVAL, which caches it there.
//
// Several slots in one request: see apply_multi_slot().
#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>

#include "sluice/redis_cluster_store.h"
#include "storage/redis/batch.h"
#include "storage/redis/breaker.h"
#include "storage/redis/client.h"
#include "storage/redis/decide.h"

namespace sluice {

namespace {

using SteadyClock = std::chrono::steady_clock;
using Code = StoreStatus::Code;
using redis::CommandResult;
using redis::Reply;

constexpr int kSlots = 16384;
// The slot map is re-read at most this often (after a MOVED, a failing node, CLUSTERDOWN).
constexpr auto kRefreshInterval = std::chrono::milliseconds(100);
// Backoff before retrying TRYAGAIN / CLUSTERDOWN / LOADING: doubles from the first to the max.
constexpr auto kRetryBackoffMin = std::chrono::milliseconds(2);
constexpr auto kRetryBackoffMax = std::chrono::milliseconds(32);

StoreStatus unavailable(std::string message) {
  return StoreStatus{Code::kUnavailable, std::move(message)};
}

// parse_address() splits "host:port" or "[v6]:port".
bool parse_address(std::string_view address, std::string& host, int& port) {
  std::string_view h;
  std::string_view p;
  if (!address.empty() && address[0] == '[') {
    const std::size_t close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return false;
    }
    h = address.substr(1, close - 1);
    p = address.substr(close + 2);
  } else {
    const std::size_t colon = address.rfind(':');
    if (colon == std::string_view::npos) return false;
    h = address.substr(0, colon);
    p = address.substr(colon + 1);
  }
  int v = 0;
  const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
  if (h.empty() || ec != std::errc() || end != p.data() + p.size() || v < 1 || v > 65535) {
    return false;
  }
  host = std::string(h);
  port = v;
  return true;
}

// make_address() is the inverse of parse_address() (Endpoint::to_string()'s spelling).
std::string make_address(const std::string& host, std::int64_t port) {
  redis::Endpoint e;
  e.host = host;
  e.port = static_cast<int>(port);
  return e.to_string();
}

// Redirection is what a cluster error reply asks of the client.
struct Redirection {
  enum class Kind { kNone, kMoved, kAsk, kRetry };
  Kind kind = Kind::kNone;
  int slot = -1;
  std::string address;  // MOVED / ASK target, "host:port"
};

// redirection() reads "MOVED 3999 127.0.0.1:6381", "ASK 3999 127.0.0.1:6381", "TRYAGAIN ...",
// "CLUSTERDOWN ...", "LOADING ...". An empty host (":6381", Redis 7 when the node does not know
// its own address) means the host of the node that answered.
Redirection redirection(const Reply& reply, const std::string& answering_host) {
  Redirection r;
  if (!reply.is_error()) return r;
  const std::string_view s = reply.str;
  auto starts = [&](std::string_view word) {
    return s.size() >= word.size() && s.substr(0, word.size()) == word &&
           (s.size() == word.size() || s[word.size()] == ' ');
  };
  if (starts("TRYAGAIN") || starts("CLUSTERDOWN") || starts("LOADING")) {
    r.kind = Redirection::Kind::kRetry;
    return r;
  }
  const bool moved = starts("MOVED");
  if (!moved && !starts("ASK")) return r;
  const std::size_t a = s.find(' ');
  const std::size_t b = s.find(' ', a + 1);
  if (b == std::string_view::npos) return r;
  const std::string_view slot = s.substr(a + 1, b - a - 1);
  std::string_view target = s.substr(b + 1);
  if (const std::size_t sp = target.find(' '); sp != std::string_view::npos) {
    target = target.substr(0, sp);
  }
  int v = -1;
  const auto [end, ec] = std::from_chars(slot.data(), slot.data() + slot.size(), v);
  if (ec != std::errc() || end != slot.data() + slot.size() || v < 0 || v >= kSlots) return r;
  std::string host;
  int port = 0;
  std::string full(target);
  if (!target.empty() && target[0] == ':') {
    full = (answering_host.find(':') != std::string::npos ? "[" + answering_host + "]"
                                                          : answering_host) +
           std::string(target);
  }
  if (!parse_address(full, host, port)) return r;
  r.kind = moved ? Redirection::Kind::kMoved : Redirection::Kind::kAsk;
  r.slot = v;
  r.address = make_address(host, port);
  return r;
}

// read_unconsumed() derives verdicts for `hits` (their real costs) from the reply to a check
// call (the same keys, every cost 0, which never writes): each hit stepped on the returned state
// without committing, exactly as read_decide_reply() reports a request that did not commit.
StoreStatus read_unconsumed(Reply reply, std::span<const Hit> hits, std::span<Verdict> out) {
  if (reply.type == Reply::Type::kArray && reply.elements.size() >= 2 &&
      reply.elements[1].type == Reply::Type::kInteger) {
    reply.elements[1].integer = 0;  // "not committed": figures describe the state as it stays
  }
  return redis::read_decide_reply(reply, hits, out);
}

bool reply_committed(const Reply& reply) {
  return reply.type == Reply::Type::kArray && reply.elements.size() >= 2 &&
         reply.elements[1].type == Reply::Type::kInteger && reply.elements[1].integer == 1;
}

}  // namespace

struct RedisClusterStore::Impl final : redis::Batcher {
  // Node is one master: its connections and its breaker. Thread-safe.
  struct Node {
    Node(std::string address_, std::string host_, redis::ClientOptions client_options,
         const RedisStoreOptions& o)
        : address(std::move(address_)),
          host(std::move(host_)),
          client(std::move(client_options)),
          breaker(o.breaker_min_open, o.breaker_max_open) {}
    const std::string address;  // "host:port"
    const std::string host;
    redis::Client client;
    redis::CircuitBreaker breaker;
  };

  // SlotMap says which master serves each slot. Immutable once installed.
  struct SlotMap {
    SlotMap() { owner.fill(-1); }
    std::vector<std::shared_ptr<Node>> masters;
    std::array<std::int16_t, kSlots> owner;  // index into masters; -1: nobody known

    std::shared_ptr<Node> node_of(int slot) const {
      const int i = owner[static_cast<std::size_t>(slot)];
      return i < 0 ? nullptr : masters[static_cast<std::size_t>(i)];
    }
    bool empty() const noexcept { return masters.empty(); }
  };

  explicit Impl(RedisClusterStoreOptions o) : options(std::move(o)) {
    if (options.seeds.empty()) {
      throw std::invalid_argument("redis cluster store: no seed nodes");
    }
    for (const std::string& seed : options.seeds) {
      std::string host;
      int port = 0;
      if (!parse_address(seed, host, port)) {
        throw std::invalid_argument("redis cluster store: bad seed '" + seed +
                                    "' (expected host:port)");
      }
    }
    if (options.max_redirects < 0) options.max_redirects = 0;
    map_ = std::make_shared<const SlotMap>();
  }

  // ---- nodes and the slot map --------------------------------------------------------------

  // node_for() returns the Node for "host:port", creating it (and connecting, bounded by the
  // connect timeout) on first use; nullptr for an address that does not parse.
  std::shared_ptr<Node> node_for(const std::string& address) {
    std::lock_guard lock(nodes_mu_);
    if (auto it = nodes_.find(address); it != nodes_.end()) return it->second;
    std::string host;
    int port = 0;
    if (!parse_address(address, host, port)) return nullptr;
    const RedisStoreOptions& o = options.node;
    redis::ClientOptions c = redis::client_options(o);
    c.endpoint = redis::Endpoint{host, port, ""};
    c.database = 0;  // a cluster has only database 0
    auto node = std::make_shared<Node>(address, host, std::move(c), o);
    nodes_.emplace(address, node);
    return node;
  }

  std::shared_ptr<const SlotMap> map() const {
    std::lock_guard lock(map_mu_);
    return map_;
  }

  // set_owner() records a MOVED: `slot` is now served by `node`.
  void set_owner(int slot, const std::shared_ptr<Node>& node) {
    std::lock_guard lock(map_mu_);
    auto next = std::make_shared<SlotMap>(*map_);
    auto it = std::find(next->masters.begin(), next->masters.end(), node);
    if (it == next->masters.end()) it = next->masters.insert(next->masters.end(), node);
    next->owner[static_cast<std::size_t>(slot)] =
        static_cast<std::int16_t>(it - next->masters.begin());
    map_ = std::move(next);
  }

  void mark_stale() noexcept { stale_.store(true, std::memory_order_relaxed); }

  // refresh() re-reads the slot map with CLUSTER SLOTS from the known masters (those not failing),
  // then the seeds, in turn. At most one refresh runs at a time, and attempts are at least
  // kRefreshInterval apart. `wait`: wait for a running refresh instead of skipping (used when
  // there is no map at all). Returns whether a map is installed now.
  bool refresh(bool wait) {
    std::unique_lock lock(refresh_mu_, std::defer_lock);
    if (wait) {
      lock.lock();
      if (!map()->empty() && !stale_.load(std::memory_order_relaxed)) return true;
    } else if (!lock.try_lock()) {
      return false;
    }
    const auto start = SteadyClock::now();
    if (attempted_ && start - last_attempt_ < kRefreshInterval) return !map()->empty();
    attempted_ = true;
    last_attempt_ = start;

    std::vector<std::string> candidates;
    {
      const std::shared_ptr<const SlotMap> current = map();
      for (const auto& n : current->masters) {
        if (!n->breaker.is_open() && n->client.connected()) candidates.push_back(n->address);
      }
    }
    for (const std::string& seed : options.seeds) {
      if (std::find(candidates.begin(), candidates.end(), seed) == candidates.end()) {
        candidates.push_back(seed);
      }
    }
    std::string why;
    for (const std::string& address : candidates) {
      std::shared_ptr<Node> node = node_for(address);
      if (node == nullptr || node->breaker.is_open()) continue;
      CommandResult r = node->client.command({"CLUSTER", "SLOTS"});
      if (!r.status.ok()) {
        if (r.status.code == Code::kTimeout) node->breaker.on_failure();
        why = r.status.message;
        continue;
      }
      std::shared_ptr<SlotMap> next = parse_slots(r.reply, *node, why);
      if (next == nullptr) continue;
      install(std::move(next));
      stale_.store(false, std::memory_order_relaxed);
      refreshes_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    {
      std::lock_guard g(error_mu_);
      last_refresh_error_ = why.empty() ? "no seed answered" : why;
    }
    return !map()->empty();
  }

  // parse_slots() turns a CLUSTER SLOTS reply into a map (creating the masters' Nodes), or
  // returns nullptr and sets `why`.
  std::shared_ptr<SlotMap> parse_slots(const Reply& reply, const Node& asked, std::string& why) {
    if (reply.is_error() || reply.type != Reply::Type::kArray) {
      why = asked.address +
            ": CLUSTER SLOTS: " + (reply.is_error() ? reply.str : std::string("unexpected reply"));
      return nullptr;
    }
    auto next = std::make_shared<SlotMap>();
    std::map<std::string, std::int16_t> index;
    for (const Reply& range : reply.elements) {
      if (range.type != Reply::Type::kArray || range.elements.size() < 3 ||
          range.elements[0].type != Reply::Type::kInteger ||
          range.elements[1].type != Reply::Type::kInteger ||
          range.elements[2].type != Reply::Type::kArray || range.elements[2].elements.size() < 2 ||
          range.elements[2].elements[0].type != Reply::Type::kString ||
          range.elements[2].elements[1].type != Reply::Type::kInteger) {
        why = asked.address + ": CLUSTER SLOTS: unexpected entry";
        return nullptr;
      }
      const std::int64_t first = range.elements[0].integer;
      const std::int64_t last = range.elements[1].integer;
      if (first < 0 || last >= kSlots || first > last) {
        why = asked.address + ": CLUSTER SLOTS: bad slot range";
        return nullptr;
      }
      const Reply& master = range.elements[2];
      std::string host = master.elements[0].str;
      if (host == "?") continue;            // the master's endpoint is unknown (yet)
      if (host.empty()) host = asked.host;  // "the address you reached me on"
      const std::string address = make_address(host, master.elements[1].integer);
      auto [it, added] = index.emplace(address, static_cast<std::int16_t>(next->masters.size()));
      if (added) {
        std::shared_ptr<Node> node = node_for(address);
        if (node == nullptr) {
          why = asked.address + ": CLUSTER SLOTS: bad address " + address;
          return nullptr;
        }
        next->masters.push_back(std::move(node));
      }
      for (std::int64_t s = first; s <= last; ++s)
        next->owner[static_cast<std::size_t>(s)] = it->second;
    }
    if (next->masters.empty()) {
      why = asked.address + ": CLUSTER SLOTS: no slots assigned";
      return nullptr;
    }
    return next;
  }

  // install() swaps in a new map and drops the Nodes that serve nothing any more (a failed-over
  // master, say); decisions still using one keep it alive until they finish.
  void install(std::shared_ptr<SlotMap> next) {
    std::vector<std::shared_ptr<Node>> dropped;
    {
      std::lock_guard lock(nodes_mu_);
      for (auto it = nodes_.begin(); it != nodes_.end();) {
        if (std::find(next->masters.begin(), next->masters.end(), it->second) ==
            next->masters.end()) {
          dropped.push_back(std::move(it->second));
          it = nodes_.erase(it);
        } else {
          ++it;
        }
      }
    }
    {
      std::lock_guard lock(map_mu_);
      map_ = std::move(next);
    }
    // `dropped` closes those clients here, outside the locks (unless still in use).
  }

  std::string last_refresh_error() const {
    std::lock_guard g(error_mu_);
    return last_refresh_error_;
  }

  // ---- the script --------------------------------------------------------------------------

  static CommandResult send(Node& node, const redis::DecideCall& call, bool asking) {
    if (!asking) return node.client.command_resp(call.resp);
    std::vector<CommandResult> rs =
        node.client.pipeline_resp("*1\r\n$6\r\nASKING\r\n" + call.resp, 2);
    if (!rs[0].status.ok()) return std::move(rs[0]);
    return std::move(rs[1]);
  }

  // Decision is the per-apply() budget: redirections followed, and the deadline for backoffs.
  struct Decision {
    int redirects = 0;
    SteadyClock::time_point deadline;
  };

  // call_slot() runs the script for `hits` (all in `slot`, stored under `keys`) on the master
  // serving the slot, following MOVED/ASK and retrying TRYAGAIN/CLUSTERDOWN within the
  // decision's budget. An ok result holds the script's reply, or an error reply that is not a
  // cluster redirection.
  CommandResult call_slot(int slot, std::span<const Hit> hits, std::span<const std::string> keys,
                          Micros when, Decision& d) {
    const std::int64_t grace = options.node.expiry_grace.count();
    std::shared_ptr<Node> ask;  // the ASK target for the next attempt
    redis::DecideCall call;
    auto failed = [](StoreStatus s) { return CommandResult{std::move(s), Reply{}}; };
    for (;;) {
      const bool asking = ask != nullptr;
      std::shared_ptr<Node> node = asking ? std::move(ask) : map()->node_of(slot);
      ask = nullptr;
      if (node == nullptr) {
        mark_stale();
        std::string why = last_refresh_error();
        return failed(unavailable("redis cluster: no known master serves slot " +
                                  std::to_string(slot) + (why.empty() ? "" : ": " + why)));
      }
      if (!node->breaker.allow()) {
        mark_stale();
        return failed(unavailable("redis " + node->address +
                                  ": not answering; circuit open until a probe succeeds"));
      }
      CommandResult r = redis::run_decide_script(
          call, hits, keys, when, grace,
          [&](const redis::DecideCall& c) { return send(*node, c, asking); });
      if (!r.status.ok()) {
        if (r.status.code == Code::kTimeout || r.status.code == Code::kUnavailable) {
          node->breaker.on_failure();
          mark_stale();
        }
        return r;
      }
      node->breaker.on_success();
      const Redirection to = redirection(r.reply, node->host);
      if (to.kind == Redirection::Kind::kNone) return r;
      if (++d.redirects > options.max_redirects) {
        return failed(unavailable("redis cluster: gave up on slot " + std::to_string(slot) +
                                  " after " + std::to_string(options.max_redirects) +
                                  " redirections; last: " + r.reply.str));
      }
      switch (to.kind) {
        case Redirection::Kind::kMoved: {
          std::shared_ptr<Node> owner = node_for(to.address);
          if (owner == nullptr) return failed(unavailable("redis cluster: " + r.reply.str));
          set_owner(to.slot, owner);
          mark_stale();  // other slots have probably moved too
          break;
        }
        case Redirection::Kind::kAsk:
          ask = node_for(to.address);
          if (ask == nullptr) return failed(unavailable("redis cluster: " + r.reply.str));
          break;
        case Redirection::Kind::kRetry: {
          // TRYAGAIN (a multi-key call while the slot's keys are split between two nodes),
          // CLUSTERDOWN (failover in progress), LOADING: wait a little, never past the timeout.
          if (r.reply.str.rfind("CLUSTERDOWN", 0) == 0) mark_stale();
          const auto delay = std::min<std::chrono::milliseconds>(
              kRetryBackoffMax, kRetryBackoffMin * (1 << std::min(d.redirects - 1, 8)));
          if (SteadyClock::now() + delay > d.deadline) {
            return failed(unavailable("redis " + node->address + ": " + r.reply.str));
          }
          std::this_thread::sleep_for(delay);
          break;
        }
        case Redirection::Kind::kNone:
          break;
      }
    }
  }

  // ---- batches -----------------------------------------------------------------------------

  // run() groups the commands by the master serving their slot and sends one pipeline per
  // master. Redirections are not followed here: the slot map is corrected (MOVED) or refreshed,
  // and the caller sends the command again in its next batch.
  std::vector<CommandResult> run(const std::vector<redis::SlotCommand>& commands) override {
    std::vector<CommandResult> results(commands.size());
    if (commands.empty()) return results;
    if (map()->empty()) {
      refresh(/*wait=*/true);
    } else if (stale_.load(std::memory_order_relaxed)) {
      refresh(/*wait=*/false);
    }
    const std::shared_ptr<const SlotMap> slots = map();
    std::map<std::shared_ptr<Node>, std::vector<std::size_t>> by_node;
    for (std::size_t i = 0; i < commands.size(); ++i) {
      std::shared_ptr<Node> node = slots->node_of(commands[i].slot);
      if (node == nullptr) {
        mark_stale();
        results[i].status = unavailable("redis cluster: no known master serves slot " +
                                        std::to_string(commands[i].slot));
        continue;
      }
      by_node[std::move(node)].push_back(i);
    }
    for (auto& [node, index] : by_node) {
      if (!node->breaker.allow()) {
        mark_stale();
        for (std::size_t i : index)
          results[i].status = unavailable("redis " + node->address +
                                          ": not answering; circuit open until a probe succeeds");
        continue;
      }
      std::vector<std::vector<std::string>> argvs;
      argvs.reserve(index.size());
      for (std::size_t i : index)
        argvs.push_back(commands[i].argv);
      std::vector<CommandResult> rs = node->client.pipeline(argvs);
      bool failed = false;
      for (std::size_t j = 0; j < index.size(); ++j) {
        CommandResult& r = rs[j];
        if (!r.status.ok()) {
          failed = failed || r.status.code == Code::kTimeout || r.status.code == Code::kUnavailable;
        } else if (r.reply.is_error()) {
          const Redirection to = redirection(r.reply, node->host);
          if (to.kind == Redirection::Kind::kMoved) {
            if (std::shared_ptr<Node> owner = node_for(to.address)) set_owner(to.slot, owner);
          }
          if (to.kind != Redirection::Kind::kNone) mark_stale();
        }
        results[index[j]] = std::move(r);
      }
      if (failed) {
        node->breaker.on_failure();
        mark_stale();
      } else {
        node->breaker.on_success();
      }
    }
    return results;
  }

  // ---- decisions ---------------------------------------------------------------------------

  StoreStatus apply(std::span<const Hit> hits, Micros now, std::span<Verdict> out) {
    if (map()->empty()) {
      refresh(/*wait=*/true);
    } else if (stale_.load(std::memory_order_relaxed)) {
      refresh(/*wait=*/false);
    }
    if (map()->empty()) {
      return unavailable("redis cluster: no slot map (CLUSTER SLOTS failed on every node): " +
                         last_refresh_error());
    }
    Decision d;
    d.deadline = SteadyClock::now() + options.node.command_timeout;
    const Micros when = options.node.redis_time ? -1 : now;

    std::vector<std::string> keys;
    std::vector<int> slots;
    keys.reserve(hits.size());
    slots.reserve(hits.size());
    for (const Hit& h : hits) {
      keys.push_back(redis::redis_key(options.node.prefix, h.key));
      slots.push_back(redis::key_slot(keys.back()));
    }
    if (std::all_of(slots.begin(), slots.end(), [&](int s) { return s == slots[0]; })) {
      // One slot: one script call, atomic.
      CommandResult r = call_slot(slots[0], hits, keys, when, d);
      if (!r.status.ok()) return r.status;
      return redis::read_decide_reply(r.reply, hits, out);
    }
    return apply_multi_slot(hits, keys, slots, when, d, out);
  }

  // A request whose hits span several slots cannot be one script. It runs in two phases:
  //
  // 1. Check: per slot, the script with every cost 0 (which never writes) returns the states;
  //    each hit's verdict for its real cost is derived from them without consuming. If any
  //    enforced hit is denied, those verdicts are returned and nothing has consumed anywhere:
  //    all-or-nothing, as in one script.
  // 2. Commit: otherwise each slot's hits run again with their real costs, one script per slot
  //    (atomic per slot), tightest slot first (least remaining headroom). If another client
  //    consumed between check and commit so that a slot's enforced hit is now denied, that
  //    slot consumes nothing and the later slots are not committed (their verdicts are the
  //    check's), but the slots committed before it have consumed: the request is denied while
  //    some of its limits counted it. Each limit still never admits more than its own contract;
  //    the error is over-counting, never over-admitting. The same holds when a node fails
  //    during the commit (the status is then an error).
  StoreStatus apply_multi_slot(std::span<const Hit> hits, std::span<const std::string> keys,
                               std::span<const int> slots, Micros when, Decision& d,
                               std::span<Verdict> out) {
    struct Group {
      int slot = 0;
      std::vector<std::size_t> index;  // into hits
      std::vector<Hit> hits;
      std::vector<std::string> keys;
      std::vector<Verdict> verdicts;
      bool consumes = false;  // some hit would consume: the commit has work to do
      std::uint64_t headroom = std::numeric_limits<std::uint64_t>::max();
    };
    std::map<int, Group> by_slot;
    for (std::size_t i = 0; i < hits.size(); ++i) {
      Group& g = by_slot[slots[i]];
      g.slot = slots[i];
      g.index.push_back(i);
      g.hits.push_back(hits[i]);
      g.keys.push_back(keys[i]);
    }
    std::vector<Group> groups;
    groups.reserve(by_slot.size());
    for (auto& [slot, g] : by_slot)
      groups.push_back(std::move(g));

    // Phase 1: check.
    bool denied = false;
    for (Group& g : groups) {
      std::vector<Hit> checks = g.hits;
      for (Hit& h : checks)
        h.cost = 0;
      CommandResult r = call_slot(g.slot, checks, g.keys, when, d);
      if (!r.status.ok()) return r.status;
      g.verdicts.resize(g.hits.size());
      StoreStatus st = read_unconsumed(std::move(r.reply), g.hits, g.verdicts);
      if (!st.ok()) return st;
      for (std::size_t j = 0; j < g.hits.size(); ++j) {
        const Hit& h = g.hits[j];
        const Verdict& v = g.verdicts[j];
        out[g.index[j]] = v;
        if (h.enforce && !v.allowed) denied = true;
        if (v.allowed && h.cost > 0) {
          g.consumes = true;
          if (h.enforce) g.headroom = std::min(g.headroom, v.remaining);
        }
      }
    }
    if (denied) return {};

    // Phase 2: commit, tightest slot first.
    std::stable_sort(groups.begin(), groups.end(),
                     [](const Group& a, const Group& b) { return a.headroom < b.headroom; });
    std::size_t committed = 0;
    for (Group& g : groups) {
      if (!g.consumes) continue;
      CommandResult r = call_slot(g.slot, g.hits, g.keys, when, d);
      if (!r.status.ok()) {
        if (committed > 0) {
          r.status.message += " (after " + std::to_string(committed) +
                              " other slot(s) of this request had consumed)";
        }
        return r.status;
      }
      StoreStatus st = redis::read_decide_reply(r.reply, g.hits, g.verdicts);
      if (!st.ok()) return st;
      for (std::size_t j = 0; j < g.hits.size(); ++j)
        out[g.index[j]] = g.verdicts[j];
      if (!reply_committed(r.reply)) return {};  // lost a race: see above
      ++committed;
    }
    return {};
  }

  RedisClusterStoreOptions options;
  // The name every node gives the script once cached: EVALSHA sends only this.
  std::atomic<std::uint64_t> refreshes_{0};
  std::atomic<bool> stale_{false};

 private:
  mutable std::mutex map_mu_;
  std::shared_ptr<const SlotMap> map_;  // guarded by map_mu_

  std::mutex nodes_mu_;  // guards nodes_; held while a new Node connects
  std::map<std::string, std::shared_ptr<Node>> nodes_;

  std::mutex refresh_mu_;  // one refresh at a time; guards attempted_, last_attempt_
  bool attempted_ = false;
  SteadyClock::time_point last_attempt_{};
  mutable std::mutex error_mu_;
  std::string last_refresh_error_;
};

RedisClusterStore::RedisClusterStore(RedisClusterStoreOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {
  // Learn the slot map now, so the first decision does not wait for it. A cluster that is down
  // now is retried on use.
  impl_->refresh(/*wait=*/true);
}

RedisClusterStore::~RedisClusterStore() = default;

StoreStatus RedisClusterStore::apply(std::span<const Hit> hits, Micros now,
                                     std::span<Verdict> out) noexcept {
  if (hits.empty()) return {};
  if (StoreStatus bad = redis::check_time(now); !bad.ok()) return bad;
  try {
    return impl_->apply(hits, now, out);
  } catch (const std::exception& e) {
    return unavailable(std::string("redis cluster: ") + e.what());
  }
}

std::string RedisClusterStore::name() const {
  std::string out = "redis+cluster://";
  for (std::size_t i = 0; i < impl_->options.seeds.size(); ++i) {
    if (i > 0) out += ',';
    out += impl_->options.seeds[i];
  }
  return out;
}

redis::Batcher& RedisClusterStore::batcher() noexcept {
  return *impl_;
}

std::uint64_t RedisClusterStore::refreshes() const noexcept {
  return impl_->refreshes_.load(std::memory_order_relaxed);
}

}  // namespace sluice
