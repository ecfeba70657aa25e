// sluice/redis_store.h — the shared store: every sluice instance decides on the same state.
//
// Each algorithm runs as one Lua script in Redis (src/storage/redis/script.cc), one script call
// deciding one request or, under load, many at once, on one key per limit; the verdicts are
// identical to the memory store's (the same conformance suite runs against both). Keys are
// `prefix{tag}key`, the tag a hash of the key, so they spread over a Redis Cluster's slots; every
// key expires once its state is full again, so idle keys cost nothing.
//
// Example:
//
//   sluice::RedisStoreOptions options;
//   options.host = "10.0.0.5";
//   auto store = std::make_unique<sluice::RedisStore>(options);
//   sluice::Limiter limiter(rules, *store, sluice::SystemClock::instance());
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "sluice/store.h"

namespace sluice {

namespace redis {
class Batcher;
}

// RedisTlsOptions configures TLS to Redis (rediss://, docs/storage.md "TLS"). With TLS on, the
// server's certificate chain is verified against ca_file and must name the host (or
// server_name) connected to, which is also sent as SNI; TLS 1.2 or later.
struct RedisTlsOptions {
  bool enabled = false;
  std::string ca_file;      // PEM CAs that verify the server; "" uses the system's default CAs
  std::string cert_file;    // a client certificate chain (PEM), for Redis's tls-auth-clients
  std::string key_file;     // its private key (PEM); needed with cert_file
  std::string server_name;  // the name checked in the certificate and sent as SNI; "": the host
  bool verify = true;       // false accepts any certificate (encryption without authentication)
};

struct RedisStoreOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string unix_path;  // a unix socket instead of host:port when set
  std::string username;   // AUTH username password (ACL) when set
  std::string password;   // AUTH password when set
  int database = 0;
  RedisTlsOptions tls;  // not with unix_path
  std::size_t connections = 2;
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds command_timeout{250};
  // Prepended to every key.
  std::string prefix = "sluice:";
  // Decide with Redis's clock (TIME) instead of the caller's: instances whose clocks disagree
  // then agree, at the cost of deterministic (manual-clock) decisions. docs/storage.md.
  bool redis_time = false;
  // Keys live this much longer than their state needs, so a caller whose clock is behind
  // Redis's does not see its state expire early.
  std::chrono::milliseconds expiry_grace{1000};
  // open_store() wraps the store in an OverLimitCache (sluice/over_limit_cache.h): keys known to
  // be over their limit are answered locally until they can pass again. Not with redis_time
  // (the cache keeps the caller's time).
  bool over_limit_cache = true;
  // The consistency of limits that name none (sluice/eventual_store.h): every decision atomic in
  // Redis (strong), or local decisions exchanged with Redis every sync interval (eventual).
  Consistency consistency = Consistency::kStrong;
  // Eventual mode: how often instances exchange their consumption with Redis.
  std::chrono::milliseconds sync_interval{100};
  // Eventual mode: the share of a limit one instance admits on its own (a key it has not synced
  // yet, Redis unreachable), in (0, 1]; 0 means 1/K for the K instances seen in Redis.
  double local_share = 0;
  // Eventual mode: the most keys decided locally; hits on further keys are decided in Redis, as
  // strong limits are, until idle local keys are dropped.
  std::size_t eventual_max_keys = 1'000'000;
  // After a timeout or a lost connection, decisions stop waiting on Redis (they fail at once,
  // and each limit's failure_mode decides) for this long, doubling up to the max while probes
  // keep failing.
  std::chrono::milliseconds breaker_min_open{100};
  std::chrono::milliseconds breaker_max_open{5000};
};

// RedisStore decides in one Redis server (Redis Cluster: see ClusterStore). Thread-safe: the
// requests of many threads (apply) or of one thread with many in flight (apply_async) share
// script calls: while a few calls are out, new requests wait, and each reply sends all that
// waited as one call, so Redis runs one script call for many decisions under load.
class RedisStore final : public Store {
 public:
  explicit RedisStore(RedisStoreOptions options);
  ~RedisStore() override;
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  StoreStatus apply(std::span<const Hit> hits, Micros now,
                    std::span<Verdict> out) noexcept override;
  // apply_async() completes on the store's I/O thread (or at once when it cannot send).
  void apply_async(std::span<const Hit> hits, Micros now, std::span<Verdict> out,
                   ApplyCompletion& done) noexcept override;
  std::string name() const override;
  // circuit_open() tells whether decisions are currently failing fast.
  bool circuit_open() const noexcept;
  // batcher() sends batches of commands to this server (src/storage/redis/batch.h; used by the
  // eventual-consistency replicator).
  redis::Batcher& batcher() noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice
