// The pieces of a decision through Redis that every Redis-backed store shares: key layout, the
// script call's arguments, and turning its reply into verdicts.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/redis_store.h"
#include "sluice/store.h"
#include "storage/redis/client.h"

namespace sluice::redis {

// client_options() maps a store's options onto its client's: endpoint, auth, database,
// connections and timeouts.
ClientOptions client_options(const RedisStoreOptions& o);

// redis_key() lays out a store key in Redis: prefix + "{" + 16 hex digits of the key's hash +
// "}" + key. The braces make the hash the Redis Cluster hash tag, so keys spread evenly over the
// slots whatever bytes they hold.
std::string redis_key(std::string_view prefix, std::string_view key);
// redis_key() into `out`, reusing its capacity.
void redis_key(std::string_view prefix, std::string_view key, std::string& out);

// key_slot() returns the Redis Cluster slot of a Redis key: CRC16 (XMODEM) of its hash tag (the
// text between the first '{' and the next '}', when not empty; else the whole key) mod 16384.
int key_slot(std::string_view redis_key) noexcept;

// DecideRequest is one request of a script call: its hits, their Redis keys (same order), and
// its time (< 0 asks the script to use Redis's TIME).
struct DecideRequest {
  std::span<const Hit> hits;
  std::span<const std::string> keys;
  Micros now = 0;
};

// DecideCall holds one script call, encoded for the wire (RESP); reusing one across calls reuses
// its buffer.
struct DecideCall {
  std::string resp;

  // build() encodes the call for `requests`: EVALSHA with `sha`, or EVAL with the script text
  // when `sha` is empty.
  void build(std::span<const DecideRequest> requests, std::int64_t grace_ms, std::string_view sha);
  // build() for one request.
  void build(std::span<const Hit> hits, std::span<const std::string> keys, Micros now,
             std::int64_t grace_ms, std::string_view sha) {
    const DecideRequest one{hits, keys, now};
    build(std::span<const DecideRequest>(&one, 1), grace_ms, sha);
  }
};

// read_decide_reply() derives each hit's verdict from the script's reply: the states before the
// request and whether it committed, stepped with the same algorithms as the memory store.
StoreStatus read_decide_reply(const Reply& reply, std::span<const Hit> hits,
                              std::span<Verdict> out);

// check_time() refuses times the script cannot hold exactly: Lua numbers are doubles, exact
// for integers below 2^53 microseconds (the year 2255).
StoreStatus check_time(Micros now) noexcept;

// decide_script_sha() returns the SHA-1 Redis names the decide script by (EVALSHA).
const std::string& decide_script_sha();

// is_noscript() tells whether a reply says the script is not cached (after SCRIPT FLUSH or a
// restart).
bool is_noscript(const Reply& reply) noexcept;

// run_decide_script() builds `call` for one request and sends it with `send` (a callable taking
// the DecideCall and returning a CommandResult): EVALSHA first, and, if Redis no longer has the
// script cached (NOSCRIPT after SCRIPT FLUSH or a restart), EVAL, which caches it again. An ok
// result holds the request's own reply (the call's first element), or the call's error reply
// (a cluster redirection, NOSCRIPT).
template <class Send>
CommandResult run_decide_script(DecideCall& call, std::span<const Hit> hits,
                                std::span<const std::string> keys, Micros now,
                                std::int64_t grace_ms, Send&& send) {
  call.build(hits, keys, now, grace_ms, decide_script_sha());
  CommandResult r = send(call);
  if (r.status.ok() && is_noscript(r.reply)) {
    call.build(hits, keys, now, grace_ms, "");
    r = send(call);
  }
  if (r.status.ok() && r.reply.type == Reply::Type::kArray && r.reply.elements.size() == 1) {
    Reply first = std::move(r.reply.elements[0]);
    r.reply = std::move(first);
  }
  return r;
}

}  // namespace sluice::redis
