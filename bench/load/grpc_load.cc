// load/grpc_load.cc — sluice-bench's gRPC client: Envoy's RateLimitService/ShouldRateLimit
// through the async API, one CompletionQueue per client thread.
//
// Closed loop: the thread that polls the queue starts a slot's next call as soon as its
// previous one finishes. Open loop: a pacer thread starts calls at their intended times and
// the polling thread only harvests: gRPC's own timers (and so AsyncNext's deadline) have
// millisecond resolution, too coarse to pace a stream whose gaps are tens of microseconds,
// whereas a plain thread sleeping to an absolute time wakes within ~50 µs.
//
// Each channel gets distinct arguments and a local subchannel pool, so every channel is its
// own TCP connection (gRPC would otherwise share one subchannel between identical channels).
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "load/load.h"

namespace sluice::load {
namespace {

namespace rls = envoy::service::ratelimit::v3;
using std::chrono::nanoseconds;

// GprDeadline() converts a steady-clock time to gRPC's monotonic clock, through the distance
// from now (gRPC's monotonic epoch is its own).
gpr_timespec GprDeadline(Clock::time_point t) {
  const auto delta = std::chrono::duration_cast<nanoseconds>(t - Clock::now()).count();
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_nanos(std::max<std::int64_t>(delta, 0), GPR_TIMESPAN));
}

class GrpcLoad final : public LoadGenerator {
 public:
  GrpcLoad(const LoadOptions& options, std::vector<std::shared_ptr<grpc::Channel>> channels)
      : options_(options),
        channels_(std::move(channels)),
        address_values_(KeyUsesAddresses(options)) {
    for (const auto& c : channels_)
      stubs_.push_back(rls::RateLimitService::NewStub(c));
  }

  void RunThread(const ThreadPlan& plan, ThreadStats& stats) const override;

  std::string Describe() const override { return "grpc " + options_.host + ":" + options_.port; }

  const LoadOptions& options() const { return options_; }
  bool address_values() const { return address_values_; }
  // Stub() is the stub of the channel that global slot `slot` uses: round-robin. Thread-safe.
  rls::RateLimitService::Stub& Stub(int slot) const {
    return *stubs_[static_cast<std::size_t>(slot) % stubs_.size()];
  }

 private:
  LoadOptions options_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<rls::RateLimitService::Stub>> stubs_;
  bool address_values_;
};

// GrpcThread is one client thread: its completion queue and call slots (plus, in open loop,
// its pacer thread).
class GrpcThread {
 public:
  GrpcThread(const GrpcLoad& load, const ThreadPlan& plan, ThreadStats& stats)
      : load_(load), plan_(plan), stats_(stats), keys_(plan.keys) {
    const LoadOptions& o = load.options();
    slots_.reserve(static_cast<std::size_t>(plan.slots));
    for (int i = 0; i < plan.slots; ++i) {
      auto s = std::make_unique<Slot>();
      s->stub = &load.Stub(plan.first_slot + i);
      // The request is built once per slot; each call only rewrites the value in place
      // (the string keeps its capacity). The typed stub serializes the message on every call
      // anyway, so a table of prebuilt messages per key would save only that copy.
      s->request.set_domain(o.domain);
      auto* entry = s->request.add_descriptors()->add_entries();
      entry->set_key(o.key);
      s->value = entry->mutable_value();
      s->value->reserve(32);
      slots_.push_back(std::move(s));
    }
  }

  void Run() {
    const Timeline& t = plan_.timeline;
    std::this_thread::sleep_until(t.start);
    std::thread pacer;
    if (plan_.open_loop) {
      for (auto& s : slots_)
        free_.push_back(s.get());
      pacer = std::thread([this] { Pace(); });
    } else {
      const Clock::time_point now = Clock::now();
      for (auto& s : slots_) {
        pending_.fetch_add(1, std::memory_order_relaxed);
        Start(*s, now, now);
      }
    }
    Harvest();
    if (pacer.joinable()) pacer.join();
    Drain();
  }

 private:
  struct Slot {
    enum class State { kIdle, kCall, kBackoff };
    rls::RateLimitService::Stub* stub = nullptr;
    rls::RateLimitRequest request;
    std::string* value = nullptr;  // the entry's value inside `request`
    rls::RateLimitResponse response;
    grpc::Status status;
    std::optional<grpc::ClientContext> context;  // one per call (gRPC does not reuse them)
    std::unique_ptr<grpc::ClientAsyncResponseReader<rls::RateLimitResponse>> reader;
    std::optional<grpc::Alarm> alarm;  // the back-off after an error
    Clock::time_point start;           // latency is measured from here
    State state = State::kIdle;
    bool measured = false;
  };

  // Start() starts a call on `s`. Called by the polling thread (closed loop) or the pacer
  // (open loop), never both for one slot at a time.
  void Start(Slot& s, Clock::time_point start, Clock::time_point now) {
    s.state = Slot::State::kCall;
    s.start = start;
    s.measured = start >= plan_.timeline.measure_begin;
    s.value->clear();
    WriteKeyValue(*s.value, keys_.Next(), load_.address_values());
    s.context.emplace();
    s.context->set_deadline(GprDeadline(now + load_.options().timeout));
    s.reader = s.stub->PrepareAsyncShouldRateLimit(&*s.context, s.request, &cq_);
    s.reader->StartCall();
    s.reader->Finish(&s.response, &s.status, &s);
  }

  // Harvest() polls the queue until every slot is idle after measure_end (or the hard stop).
  void Harvest() {
    const Timeline& t = plan_.timeline;
    for (;;) {
      // The pacer's flag is read first: once it is set, every call the pacer started is
      // already counted in pending_.
      const bool no_more_starts = plan_.open_loop ? pacer_done_.load(std::memory_order_acquire)
                                                  : Clock::now() >= t.measure_end;
      if (no_more_starts && pending_.load(std::memory_order_acquire) == 0) return;
      // Open loop wakes now and then to see whether the pacer has finished.
      const Clock::time_point wake =
          plan_.open_loop ? std::min(t.hard_stop, Clock::now() + std::chrono::milliseconds(50))
                          : t.hard_stop;
      void* tag = nullptr;
      bool ok = false;
      const auto status = cq_.AsyncNext(&tag, &ok, GprDeadline(wake));
      if (status == grpc::CompletionQueue::SHUTDOWN) return;
      if (status == grpc::CompletionQueue::TIMEOUT) {
        if (Clock::now() >= t.hard_stop) return;
        continue;
      }
      OnEvent(*static_cast<Slot*>(tag), Clock::now());
    }
  }

  void OnEvent(Slot& s, Clock::time_point now) {
    if (s.state == Slot::State::kBackoff) {
      s.alarm.reset();
      return Release(s, now);
    }
    const Outcome outcome = Classify(s);
    stats_.Record(s.measured, outcome, now - s.start);
    s.reader.reset();  // before the context: the reader lives in the call's arena
    s.context.reset();
    if (outcome == Outcome::kOk || outcome == Outcome::kOverLimit) return Release(s, now);
    stats_.NoteError(s.status.ok() ? "overall_code " + std::to_string(s.response.overall_code())
                                   : "gRPC status " + std::to_string(s.status.error_code()) + ": " +
                                         s.status.error_message());
    s.state = Slot::State::kBackoff;
    s.alarm.emplace();
    s.alarm->Set(&cq_, GprDeadline(now + kErrorBackoff), &s);
  }

  static Outcome Classify(const Slot& s) {
    switch (s.status.error_code()) {
      case grpc::StatusCode::OK:
        break;
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        return Outcome::kTimeout;
      case grpc::StatusCode::UNAVAILABLE:
      case grpc::StatusCode::CANCELLED:
        return Outcome::kTransportError;
      default:
        return Outcome::kStatusError;
    }
    switch (s.response.overall_code()) {
      case rls::RateLimitResponse::OK:
        return Outcome::kOk;
      case rls::RateLimitResponse::OVER_LIMIT:
        return Outcome::kOverLimit;
      default:
        return Outcome::kStatusError;
    }
  }

  // Release(): `s` has finished a call (or its back-off).
  void Release(Slot& s, Clock::time_point now) {
    if (!plan_.open_loop && now < plan_.timeline.measure_end) return Start(s, now, now);
    s.state = Slot::State::kIdle;
    if (plan_.open_loop) {
      std::lock_guard lock(free_mutex_);
      free_.push_back(&s);
      free_cv_.notify_one();
    }
    pending_.fetch_sub(1, std::memory_order_release);
  }

  // Pace() (open loop, its own thread) starts each call at its intended time, or as soon as a
  // slot is free after it. Latency is measured from the intended time either way, so a wait
  // for a slot shows in the figures instead of being omitted (coordinated omission).
  void Pace() {
    const Timeline& t = plan_.timeline;
    std::uint64_t k = 0;
    // A backlog starts when a call finds every slot busy, and lasts until the pacer is on
    // schedule again (it has to sleep); calls sent late meanwhile waited for a slot.
    bool backlog = false;
    for (;; ++k) {
      const Clock::time_point due = plan_.schedule.Due(k);
      if (due >= t.measure_end) break;
      if (due > Clock::now()) {
        backlog = false;
        std::this_thread::sleep_until(due);
      }
      Slot* s = nullptr;
      {
        std::unique_lock lock(free_mutex_);
        if (free_.empty()) backlog = true;
        free_cv_.wait_until(lock, t.measure_end, [this] { return !free_.empty(); });
        if (!free_.empty()) {
          s = free_.back();
          free_.pop_back();
        }
      }
      if (s == nullptr) break;  // still no free slot at measure_end
      const Clock::time_point now = Clock::now();
      if (due >= t.measure_begin) {
        stats_.sent.Add();
        const nanoseconds lag = now - due;
        stats_.max_lag_ns.SetMax(
            static_cast<std::uint64_t>(std::max<std::int64_t>(lag.count(), 0)));
        if (lag > kLateThreshold) (backlog ? stats_.late_no_slot : stats_.late_client).Add();
      }
      pending_.fetch_add(1, std::memory_order_relaxed);
      Start(*s, due, now);
    }
    for (;; ++k) {  // what was due but never sent
      const Clock::time_point due = plan_.schedule.Due(k);
      if (due >= t.measure_end) break;
      if (due >= t.measure_begin) stats_.unsent.Add();
    }
    stats_.pacer_cpu_ns.Add(ThreadCpuNanos());
    pacer_done_.store(true, std::memory_order_release);
  }

  // Drain() cancels what is left at the hard stop (nothing, normally: every call has a
  // deadline) and empties the queue, which gRPC requires before it is destroyed.
  void Drain() {
    for (auto& s : slots_) {
      if (s->state == Slot::State::kCall) s->context->TryCancel();
      if (s->state == Slot::State::kBackoff) s->alarm->Cancel();
    }
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
      Slot& s = *static_cast<Slot*>(tag);
      s.reader.reset();
      s.context.reset();
      s.alarm.reset();
      s.state = Slot::State::kIdle;
    }
  }

  const GrpcLoad& load_;
  const ThreadPlan& plan_;
  ThreadStats& stats_;
  grpc::CompletionQueue cq_;  // before the slots, so destroyed after them
  std::vector<std::unique_ptr<Slot>> slots_;
  KeyPicker keys_;               // used by whichever thread starts calls
  std::atomic<int> pending_{0};  // slots with a call or a back-off in progress
  std::atomic<bool> pacer_done_{false};
  std::mutex free_mutex_;  // open loop: the idle slots, shared by pacer and poller
  std::condition_variable free_cv_;
  std::vector<Slot*> free_;
};

void GrpcLoad::RunThread(const ThreadPlan& plan, ThreadStats& stats) const {
  GrpcThread thread(*this, plan, stats);
  thread.Run();
}

}  // namespace

std::unique_ptr<LoadGenerator> OpenGrpc(const LoadOptions& options, std::string& error) {
  const std::string target = options.host + ":" + options.port;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < options.connections; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("sluice_bench.channel", i);   // distinct arguments: never the same subchannel
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);  // a failed call is an error, not retried
    // Reconnect quickly if the server restarts during a run (the default backoff is 1 s, 1.6×).
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    channels.push_back(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  }
  const Clock::time_point deadline = Clock::now() + options.timeout;
  for (auto& c : channels)
    c->GetState(/*try_to_connect=*/true);
  for (auto& c : channels) {
    if (!c->WaitForConnected(GprDeadline(deadline))) {
      error = "cannot connect to " + target + " within " +
              std::to_string(
                  std::chrono::duration_cast<std::chrono::milliseconds>(options.timeout).count()) +
              " ms (gRPC)";
      return nullptr;
    }
  }
  return std::make_unique<GrpcLoad>(options, std::move(channels));
}

}  // namespace sluice::load
