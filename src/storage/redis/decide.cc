#include "storage/redis/decide.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "storage/redis/script.h"
#include "storage/redis/sha1.h"

namespace sluice::redis {

ClientOptions client_options(const RedisStoreOptions& o) {
  ClientOptions c;
  c.endpoint.host = o.host;
  c.endpoint.port = o.port;
  c.endpoint.unix_path = o.unix_path;
  c.username = o.username;
  c.password = o.password;
  c.database = o.database;
  c.tls = o.tls;
  c.connections = o.connections;
  c.connect_timeout = o.connect_timeout;
  c.command_timeout = o.command_timeout;
  return c;
}

void redis_key(std::string_view prefix, std::string_view key, std::string& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  const std::uint64_t h = XXH3_64bits(key.data(), key.size());
  out.assign(prefix);
  out += '{';
  for (int s = 60; s >= 0; s -= 4)
    out += kHex[(h >> s) & 0xf];
  out += '}';
  out.append(key);
}

std::string redis_key(std::string_view prefix, std::string_view key) {
  std::string out;
  redis_key(prefix, key, out);
  return out;
}

namespace {

std::uint16_t crc16(std::string_view s) noexcept {
  // CRC-16/XMODEM (polynomial 0x1021, initial 0), as the Redis Cluster specification defines.
  std::uint16_t crc = 0;
  for (unsigned char c : s) {
    crc ^= static_cast<std::uint16_t>(c << 8);
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) != 0 ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021)
                                : static_cast<std::uint16_t>(crc << 1);
    }
  }
  return crc;
}

}  // namespace

int key_slot(std::string_view key) noexcept {
  const std::size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const std::size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return crc16(key) & 16383;
}

void DecideCall::build(std::span<const DecideRequest> requests, std::int64_t grace_ms,
                       std::string_view sha) {
  // RESP written directly: an array of bulk strings. Reuses the buffer's capacity, so a steady
  // caller allocates nothing here.
  resp.clear();
  auto put_count = [&](char kind, std::size_t n) {
    char buf[24];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
    resp += kind;
    resp.append(buf, end);
    resp += "\r\n";
  };
  auto put = [&](std::string_view v) {
    put_count('$', v.size());
    resp.append(v);
    resp += "\r\n";
  };
  auto put_int = [&](auto v) {
    char buf[24];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    put(std::string_view(buf, static_cast<std::size_t>(end - buf)));
  };
  std::size_t keys = 0;
  for (const DecideRequest& r : requests)
    keys += r.keys.size();
  put_count('*', 3 + keys + 1 + requests.size());
  if (sha.empty()) {
    put("EVAL");
    put(kDecideScript);
  } else {
    put("EVALSHA");
    put(sha);
  }
  put_int(keys);
  for (const DecideRequest& r : requests) {
    for (const std::string& k : r.keys)
      put(k);
  }
  put_int(grace_ms);
  // One argument per request: its time, its number of hits and six per hit, as little-endian
  // doubles (the script's numbers are doubles: nothing the text would carry is lost).
  static_assert(std::endian::native == std::endian::little && sizeof(double) == 8);
  auto put_double = [&](double v) {
    char bytes[sizeof v];
    std::memcpy(bytes, &v, sizeof v);
    resp.append(bytes, sizeof bytes);
  };
  for (const DecideRequest& r : requests) {
    put_count('$', 8 * (2 + 6 * r.hits.size()));
    put_double(static_cast<double>(r.now < 0 ? Micros{-1} : r.now));
    put_double(static_cast<double>(r.hits.size()));
    for (const Hit& h : r.hits) {
      put_double(static_cast<int>(h.spec->algorithm));
      put_double(static_cast<double>(h.spec->limit));
      put_double(static_cast<double>(h.spec->window));
      put_double(static_cast<double>(h.spec->burst));
      put_double(static_cast<double>(h.cost));
      put_double(h.enforce ? 1 : 0);
    }
    resp += "\r\n";
  }
}

StoreStatus check_time(Micros now) noexcept {
  constexpr Micros kLimit = Micros{1} << 53;
  if (now >= kLimit || now <= -kLimit) {
    return StoreStatus{StoreStatus::Code::kInvalid,
                       "redis: time out of range (the store holds times up to 2^53 us, year 2255)"};
  }
  return {};
}

const std::string& decide_script_sha() {
  static const std::string sha = sha1_hex(kDecideScript);
  return sha;
}

bool is_noscript(const Reply& reply) noexcept {
  return reply.is_error() && reply.str.rfind("NOSCRIPT", 0) == 0;
}

namespace {

StoreStatus protocol_error(std::string message) {
  return StoreStatus{StoreStatus::Code::kInvalid, std::move(message)};
}

bool all_integers(const Reply& r) {
  for (const Reply& e : r.elements) {
    if (e.type != Reply::Type::kInteger) return false;
  }
  return true;
}

// The script sends times within +-2^53 microseconds (Lua's exact integers) and counts within
// what a limit can hold; anything else did not come from it.
constexpr std::int64_t kTimeBound = std::int64_t{1} << 53;
bool time_ok(const Reply& r) {
  return r.integer > -kTimeBound && r.integer < kTimeBound;
}
bool count_ok(const Reply& r) {
  return r.integer >= 0 && static_cast<std::uint64_t>(r.integer) <= kMaxLimit;
}

// state_ok() tells whether a hit's state (all integers) is one the script could send: the right
// size for its algorithm, times and counts in range, and a sliding log's live entries oldest
// first, after the horizon and not after its last hit, each of a positive cost.
bool state_ok(const std::vector<Reply>& e, const LimitSpec& spec, Micros now) {
  if (e.empty()) return true;
  if (!time_ok(e[0])) return false;
  switch (spec.algorithm) {
    case Algorithm::kFixedWindow:
      return e.size() == 2 && count_ok(e[1]);
    case Algorithm::kSlidingWindowCounter:
      return e.size() == 3 && count_ok(e[1]) && count_ok(e[2]);
    case Algorithm::kTokenBucket:
      return e.size() == 3 && time_ok(e[1]) && count_ok(e[2]);
    case Algorithm::kSlidingWindowLog: {
      if (e.size() % 2 != 1) return false;
      const Micros horizon = std::max(now, e[0].integer) - spec.window;
      std::uint64_t sum = 0;
      for (std::size_t j = 1; j + 1 < e.size(); j += 2) {
        const Micros t = e[j].integer;
        if (!time_ok(e[j]) || t <= horizon || t > e[0].integer || (j > 1 && t <= e[j - 2].integer))
          return false;
        if (!count_ok(e[j + 1]) || e[j + 1].integer == 0) return false;
        sum += static_cast<std::uint64_t>(e[j + 1].integer);
        if (sum > kMaxLimit) return false;
      }
      return true;
    }
  }
  return false;
}

}  // namespace

StoreStatus read_decide_reply(const Reply& reply, std::span<const Hit> hits,
                              std::span<Verdict> out) {
  if (reply.is_error()) return protocol_error("redis: " + reply.str);
  if (reply.type != Reply::Type::kArray || reply.elements.size() != hits.size() + 2 ||
      reply.elements[0].type != Reply::Type::kInteger ||
      reply.elements[1].type != Reply::Type::kInteger) {
    return protocol_error("redis: unexpected reply to the decide script");
  }
  const Micros now = reply.elements[0].integer;
  if (!time_ok(reply.elements[0])) return protocol_error("redis: time out of range in a reply");
  const bool committed = reply.elements[1].integer == 1;
  for (std::size_t i = 0; i < hits.size(); ++i) {
    const Reply& st = reply.elements[i + 2];
    if (st.type != Reply::Type::kArray || !all_integers(st) ||
        !state_ok(st.elements, *hits[i].spec, now)) {
      return protocol_error("redis: unexpected state in the decide script's reply");
    }
    const auto& e = st.elements;
    const bool fresh = e.empty();
    const LimitSpec& spec = *hits[i].spec;
    const std::uint64_t cost = hits[i].cost;
    auto u64 = [](const Reply& r) { return static_cast<std::uint64_t>(r.integer); };
    switch (spec.algorithm) {
      case Algorithm::kFixedWindow: {
        FixedWindowState s;
        if (!fresh) {
          if (e.size() != 2) return protocol_error("redis: bad fixed window state");
          s = {e[0].integer, u64(e[1])};
        }
        out[i] = step(s, spec, cost, now, committed);
        break;
      }
      case Algorithm::kSlidingWindowCounter: {
        SlidingCounterState s;
        if (!fresh) {
          if (e.size() != 3) return protocol_error("redis: bad sliding counter state");
          s = {e[0].integer, u64(e[1]), u64(e[2])};
        }
        out[i] = step(s, spec, cost, now, committed);
        break;
      }
      case Algorithm::kTokenBucket: {
        TokenBucketState s;
        if (!fresh) {
          if (e.size() != 3) return protocol_error("redis: bad token bucket state");
          s = {e[0].integer, e[1].integer, static_cast<std::uint32_t>(e[2].integer)};
        }
        out[i] = step(s, spec, cost, now, committed);
        break;
      }
      case Algorithm::kSlidingWindowLog: {
        SlidingLogState s;
        if (!fresh) {
          if (e.size() % 2 != 1) return protocol_error("redis: bad sliding log state");
          std::vector<SlidingLogState::Hit> entries;
          entries.reserve(e.size() / 2);
          for (std::size_t j = 1; j + 1 < e.size(); j += 2) {
            entries.push_back({e[j].integer, u64(e[j + 1])});
          }
          s = SlidingLogState::restore(e[0].integer, std::move(entries));
        }
        out[i] = step(s, spec, cost, now, committed);
        break;
      }
    }
  }
  return {};
}

}  // namespace sluice::redis
