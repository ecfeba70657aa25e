#include "sluice/redis_store.h"

#include "storage/redis/batch.h"
#include "storage/redis/breaker.h"
#include "storage/redis/client.h"
#include "storage/redis/decide.h"

namespace sluice {

struct RedisStore::Impl final : redis::Batcher {
  explicit Impl(RedisStoreOptions o)
      : options(std::move(o)),
        client(redis::client_options(options)),
        breaker(options.breaker_min_open, options.breaker_max_open) {}

  std::vector<redis::CommandResult> run(const std::vector<redis::SlotCommand>& commands) override {
    if (!breaker.allow()) {
      std::vector<redis::CommandResult> failed(commands.size());
      for (redis::CommandResult& r : failed)
        r.status = StoreStatus{StoreStatus::Code::kUnavailable,
                               "redis: not answering; circuit open until a probe succeeds"};
      return failed;
    }
    std::vector<std::vector<std::string>> argvs;
    argvs.reserve(commands.size());
    for (const redis::SlotCommand& c : commands)
      argvs.push_back(c.argv);
    std::vector<redis::CommandResult> results = client.pipeline(argvs);
    if (!results.empty()) {
      const StoreStatus& last = results.back().status;
      if (last.code == StoreStatus::Code::kTimeout ||
          last.code == StoreStatus::Code::kUnavailable) {
        breaker.on_failure();
      } else {
        breaker.on_success();
      }
    }
    return results;
  }

  RedisStoreOptions options;
  redis::Client client;
  redis::CircuitBreaker breaker;
};

RedisStore::RedisStore(RedisStoreOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

RedisStore::~RedisStore() = default;

std::string RedisStore::name() const {
  const RedisStoreOptions& o = impl_->options;
  if (!o.unix_path.empty()) return "redis+unix://" + o.unix_path;
  return "redis://" + o.host + ":" + std::to_string(o.port) + "/" + std::to_string(o.database);
}

redis::Batcher& RedisStore::batcher() noexcept {
  return *impl_;
}

bool RedisStore::circuit_open() const noexcept {
  return impl_->breaker.is_open();
}

StoreStatus RedisStore::apply(std::span<const Hit> hits, Micros now,
                              std::span<Verdict> out) noexcept {
  if (hits.empty()) return {};
  if (StoreStatus bad = redis::check_time(now); !bad.ok()) return bad;
  if (!impl_->breaker.allow()) {
    return StoreStatus{StoreStatus::Code::kUnavailable,
                       "redis: not answering; circuit open until a probe succeeds"};
  }
  StoreStatus status = decide(hits, now, out);
  if (status.code == StoreStatus::Code::kTimeout ||
      status.code == StoreStatus::Code::kUnavailable) {
    impl_->breaker.on_failure();
  } else {
    impl_->breaker.on_success();
  }
  return status;
}

StoreStatus RedisStore::decide(std::span<const Hit> hits, Micros now,
                               std::span<Verdict> out) noexcept {
  try {
    // Per-thread buffers: a steady caller builds its keys and arguments without allocating.
    thread_local std::vector<std::string> keys;
    thread_local redis::DecideCall call;
    keys.resize(hits.size());
    for (std::size_t i = 0; i < hits.size(); ++i) {
      redis::redis_key(impl_->options.prefix, hits[i].key, keys[i]);
    }
    const Micros when = impl_->options.redis_time ? -1 : now;
    const std::int64_t grace = impl_->options.expiry_grace.count();

    redis::CommandResult r = redis::run_decide_script(
        call, hits, keys, when, grace,
        [this](const auto& c) { return impl_->client.command(c.views()); });
    if (!r.status.ok()) return r.status;
    return redis::read_decide_reply(r.reply, hits, out);
  } catch (const std::exception& e) {
    return StoreStatus{StoreStatus::Code::kUnavailable, std::string("redis: ") + e.what()};
  }
}

}  // namespace sluice
