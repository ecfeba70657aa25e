// redis::Client throughput: N threads doing PING or INCR through one client (1, 2 or 4
// connections) against a local redis-server started by the test harness. Reports calls/s and
// the pipelining depth (commands per write). Run with `make bench` or directly.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "storage/redis/client.h"
#include "support/redis_harness.h"

namespace sluice::redis {
namespace {

// Created on the main thread: harness children die with the thread that started them.
testing::RedisServer* g_server = nullptr;
std::map<std::size_t, std::unique_ptr<Client>>* g_clients = nullptr;

Client& ClientWith(std::size_t connections) {
  return *g_clients->at(connections);
}

void Run(benchmark::State& state, std::initializer_list<std::string_view> argv) {
  Client& client = ClientWith(static_cast<std::size_t>(state.range(0)));
  const ClientStats before = client.stats();
  std::int64_t failures = 0;
  for (auto _ : state) {
    const CommandResult r = client.command(argv);
    if (!r.status.ok()) ++failures;
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    const ClientStats after = client.stats();
    const double batches = static_cast<double>(after.batches - before.batches);
    // Other threads' commands are counted too: this is the client's depth during the run.
    state.counters["per_write"] =
        batches > 0 ? static_cast<double>(after.commands - before.commands) / batches : 0;
  }
  state.counters["failures"] = benchmark::Counter(static_cast<double>(failures));
}

void BM_Ping(benchmark::State& state) {
  Run(state, {"PING"});
}
void BM_Incr(benchmark::State& state) {
  Run(state, {"INCR", "bench:counter"});
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgName("conns")->Arg(1)->Arg(2)->Arg(4);
  b->ThreadRange(1, 64)->UseRealTime();
}

BENCHMARK(BM_Ping)->Apply(Args);
BENCHMARK(BM_Incr)->Apply(Args);

}  // namespace
}  // namespace sluice::redis

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  sluice::testing::RedisServer server;
  std::map<std::size_t, std::unique_ptr<sluice::redis::Client>> clients;
  for (std::size_t n : {1, 2, 4}) {
    sluice::redis::ClientOptions o;
    o.endpoint.host = server.host();
    o.endpoint.port = server.port();
    o.connections = n;
    clients[n] = std::make_unique<sluice::redis::Client>(o);
    if (!clients[n]->connected()) {
      std::fprintf(stderr, "cannot connect to %s\n", server.address().c_str());
      return 1;
    }
  }
  sluice::redis::g_server = &server;
  sluice::redis::g_clients = &clients;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
