#include "sluice/redis_store.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>

#include "storage/redis/batch.h"
#include "storage/redis/breaker.h"
#include "storage/redis/client.h"
#include "storage/redis/decide.h"

namespace sluice {

namespace {

// The most requests one script call carries.
constexpr std::size_t kMaxRequestsPerCall = 64;

StoreStatus out_of_memory(const std::exception& e) {
  return StoreStatus{StoreStatus::Code::kUnavailable, std::string("redis: ") + e.what()};
}

}  // namespace

// Requests go to Redis as script calls, each carrying every request that was waiting when it was
// sent: while `max_calls` calls are out, new requests wait, and each reply sends those waiting as
// the next call. A lone request goes out at once; under load, one call carries many.
struct RedisStore::Impl final : redis::Batcher {
  explicit Impl(RedisStoreOptions o)
      : options(std::move(o)),
        breaker(options.breaker_min_open, options.breaker_max_open),
        max_calls(std::max<std::size_t>(2, options.connections)),
        client(redis::client_options(options)) {}

  // Op is one request: the caller's hits, time, verdicts and completion.
  struct Op {
    std::span<const Hit> hits;
    Micros now;
    std::span<Verdict> out;
    ApplyCompletion* done;
  };

  // Call is one script call out to Redis and the requests it carries.
  struct Call final : redis::Completion {
    explicit Call(Impl& i) : impl(i) { ops.reserve(kMaxRequestsPerCall); }
    void complete(redis::CommandResult&& result) noexcept override {
      impl.finish(*this, std::move(result));
    }
    Impl& impl;
    std::vector<Op> ops;            // never past its reserved capacity
    std::vector<std::string> keys;  // the ops' Redis keys, one after another
    std::vector<redis::DecideRequest> requests;
    redis::DecideCall call;
    bool eval = false;  // resent as EVAL after NOSCRIPT
  };

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
    if (!results.empty()) report(results.back().status);
    return results;
  }

  // report() tells the breaker how a call went.
  void report(const StoreStatus& status) noexcept {
    if (status.code == StoreStatus::Code::kTimeout ||
        status.code == StoreStatus::Code::kUnavailable) {
      breaker.on_failure();
    } else {
      breaker.on_success();
    }
  }

  // submit() sends a request at once when fewer than max_calls calls are out (then none wait),
  // else queues it for the next reply.
  void submit(const Op& op) noexcept {
    Call* call = nullptr;
    try {
      std::lock_guard lock(mu);
      if (calls_out >= max_calls) {
        waiting.push_back(op);
        return;
      }
      call = spare_call();
      call->ops.assign(1, op);
      ++calls_out;
    } catch (const std::exception& e) {  // std::bad_alloc: nothing was queued
      op.done->applied(out_of_memory(e));
      return;
    }
    send(*call);
  }

  // spare_call() takes a Call that is not out, making one if none is. Under mu.
  Call* spare_call() {
    if (spare.empty()) {
      calls.push_back(std::make_unique<Call>(*this));
      spare.reserve(calls.size());  // so finish() returns Calls to `spare` without allocating
      return calls.back().get();
    }
    Call* call = spare.back();
    spare.pop_back();
    return call;
  }

  // send() builds the call's script arguments and sends it.
  void send(Call& call) noexcept {
    try {
      call.eval = false;
      call.keys.clear();
      call.requests.clear();
      for (const Op& op : call.ops) {
        for (const Hit& h : op.hits) {
          call.keys.emplace_back();
          redis::redis_key(options.prefix, h.key, call.keys.back());
        }
      }
      std::size_t k = 0;
      for (const Op& op : call.ops) {
        call.requests.push_back(redis::DecideRequest{
            op.hits, std::span<const std::string>(call.keys).subspan(k, op.hits.size()),
            options.redis_time ? Micros{-1} : op.now});
        k += op.hits.size();
      }
      call.call.build(call.requests, options.expiry_grace.count(), redis::decide_script_sha());
    } catch (const std::exception& e) {  // std::bad_alloc
      finish(call, redis::CommandResult{out_of_memory(e), redis::Reply{}});
      return;
    }
    client.command_async_resp(call.call.resp, call);
  }

  // finish() hands each request its verdicts, then sends the requests that waited meanwhile as
  // the next call (or retires this one). On the I/O thread.
  void finish(Call& call, redis::CommandResult&& r) noexcept {
    if (r.status.ok() && redis::is_noscript(r.reply) && !call.eval) {
      // Redis lost the script (SCRIPT FLUSH, a restart): send it whole, which caches it again.
      try {
        call.call.build(call.requests, options.expiry_grace.count(), "");
        call.eval = true;
        client.command_async_resp(call.call.resp, call);
        return;
      } catch (const std::exception& e) {
        r = redis::CommandResult{out_of_memory(e), redis::Reply{}};
      }
    }
    report(r.status);
    const bool per_request = r.status.ok() && r.reply.type == redis::Reply::Type::kArray &&
                             r.reply.elements.size() == call.ops.size();
    for (std::size_t i = 0; i < call.ops.size(); ++i) {
      const Op& op = call.ops[i];
      StoreStatus status;
      if (!r.status.ok()) {
        status = r.status;
      } else if (!per_request) {
        status = StoreStatus{StoreStatus::Code::kInvalid,
                             r.reply.is_error() ? "redis: " + r.reply.str
                                                : "redis: unexpected reply to the decide script"};
      } else {
        try {
          status = redis::read_decide_reply(r.reply.elements[i], op.hits, op.out);
        } catch (const std::exception& e) {  // std::bad_alloc
          status = out_of_memory(e);
        }
      }
      op.done->applied(std::move(status));
    }
    Call* next = nullptr;
    {
      std::lock_guard lock(mu);
      spare.push_back(&call);  // within the capacity reserved for every Call
      if (waiting.empty()) {
        --calls_out;
      } else {
        next = spare.back();
        spare.pop_back();
        const std::size_t n = std::min(waiting.size(), kMaxRequestsPerCall);
        next->ops.assign(waiting.begin(), waiting.begin() + static_cast<std::ptrdiff_t>(n));
        waiting.erase(waiting.begin(), waiting.begin() + static_cast<std::ptrdiff_t>(n));
      }
    }
    if (next != nullptr) send(*next);
  }

  RedisStoreOptions options;
  redis::CircuitBreaker breaker;
  const std::size_t max_calls;

  std::mutex mu;
  std::deque<Op> waiting;                    // requests not yet sent, oldest first
  std::size_t calls_out = 0;                 // calls sent and not yet finished
  std::vector<std::unique_ptr<Call>> calls;  // every Call made (at most max_calls)
  std::vector<Call*> spare;                  // those not out

  // Last: destroyed first, so the calls it fails on the way out still exist.
  redis::Client client;
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
  // A synchronous apply is an asynchronous one waited for, so that many threads' requests share
  // script calls too. The client bounds the wait: every call completes within the command
  // timeout.
  struct Wait final : ApplyCompletion {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    StoreStatus status;
    void applied(StoreStatus s) noexcept override {
      std::lock_guard lock(mu);  // notified under the lock: the waiter cannot leave before
      status = std::move(s);
      done = true;
      cv.notify_one();
    }
  };
  Wait wait;
  apply_async(hits, now, out, wait);
  std::unique_lock lock(wait.mu);
  wait.cv.wait(lock, [&] { return wait.done; });
  return std::move(wait.status);
}

void RedisStore::apply_async(std::span<const Hit> hits, Micros now, std::span<Verdict> out,
                             ApplyCompletion& done) noexcept {
  if (hits.empty()) return done.applied({});
  if (StoreStatus bad = redis::check_time(now); !bad.ok()) return done.applied(std::move(bad));
  if (!impl_->breaker.allow()) {
    return done.applied(StoreStatus{StoreStatus::Code::kUnavailable,
                                    "redis: not answering; circuit open until a probe succeeds"});
  }
  impl_->submit(Impl::Op{hits, now, out, &done});
}

}  // namespace sluice
