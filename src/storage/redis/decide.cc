#include "storage/redis/decide.h"

#include <xxhash.h>

#include <cstdio>

#include "storage/redis/script.h"

namespace sluice::redis {

std::string redis_key(std::string_view prefix, std::string_view key) {
  char tag[20];
  std::snprintf(tag, sizeof tag, "{%016llx}",
                static_cast<unsigned long long>(XXH3_64bits(key.data(), key.size())));
  std::string out;
  out.reserve(prefix.size() + 18 + key.size());
  out.append(prefix);
  out.append(tag, 18);
  out.append(key);
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

void DecideCall::build(std::span<const Hit> hits, std::span<const std::string> keys, Micros now,
                       std::int64_t grace_ms, std::string_view sha) {
  args.clear();
  args.reserve(5 + keys.size() + 6 * hits.size());
  if (sha.empty()) {
    args.emplace_back("EVAL");
    args.emplace_back(kDecideScript);
  } else {
    args.emplace_back("EVALSHA");
    args.emplace_back(sha);
  }
  args.push_back(std::to_string(keys.size()));
  for (const std::string& k : keys)
    args.push_back(k);
  args.push_back(std::to_string(now < 0 ? -1 : now));
  args.push_back(std::to_string(grace_ms));
  for (const Hit& h : hits) {
    args.push_back(std::to_string(static_cast<int>(h.spec->algorithm)));
    args.push_back(std::to_string(h.spec->limit));
    args.push_back(std::to_string(h.spec->window));
    args.push_back(std::to_string(h.spec->burst));
    args.push_back(std::to_string(h.cost));
    args.emplace_back(h.enforce ? "1" : "0");
  }
}

std::vector<std::string_view> DecideCall::views() const {
  return std::vector<std::string_view>(args.begin(), args.end());
}

StoreStatus check_time(Micros now) noexcept {
  constexpr Micros kLimit = Micros{1} << 53;
  if (now >= kLimit || now <= -kLimit) {
    return StoreStatus{StoreStatus::Code::kInvalid,
                       "redis: time out of range (the store holds times up to 2^53 us, year 2255)"};
  }
  return {};
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
  const bool committed = reply.elements[1].integer == 1;
  for (std::size_t i = 0; i < hits.size(); ++i) {
    const Reply& st = reply.elements[i + 2];
    if (st.type != Reply::Type::kArray || !all_integers(st)) {
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
