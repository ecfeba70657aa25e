// Tests for the pipelined Redis client against real redis-server processes (test/support).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "storage/redis/client.h"
#include "storage/redis/decide.h"
#include "support/redis_harness.h"

namespace sluice::redis {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using Code = StoreStatus::Code;
using Type = Reply::Type;
using testing::RedisServer;

// The reader: replies split anywhere across feeds, nested arrays, errors, nil; a protocol error
// is final.
TEST(ReplyReaderTest, ParsesRepliesSplitAnywhereAndFailsForGoodOnGarbage) {
  const std::string stream =
      "+OK\r\n:-42\r\n$5\r\nhello\r\n$-1\r\n-ERR bad\r\n*2\r\n*2\r\n:1\r\n$0\r\n\r\n*0\r\n";
  for (std::size_t step : {1u, 2u, 3u, 7u, 64u}) {
    ReplyReader reader;
    std::vector<Reply> got;
    std::string error;
    for (std::size_t at = 0; at < stream.size(); at += step) {
      ASSERT_TRUE(reader.feed(std::string_view(stream).substr(at, step), error)) << error;
      Reply r;
      while (reader.next(r, error) == 1)
        got.push_back(std::move(r));
    }
    ASSERT_EQ(got.size(), 6u) << "step " << step;
    EXPECT_EQ(got[0].type, Type::kStatus);
    EXPECT_EQ(got[0].str, "OK");
    EXPECT_EQ(got[1].integer, -42);
    EXPECT_EQ(got[2].str, "hello");
    EXPECT_EQ(got[3].type, Type::kNil);
    EXPECT_TRUE(got[4].is_error());
    EXPECT_EQ(got[4].str, "ERR bad");
    ASSERT_EQ(got[5].elements.size(), 2u);
    ASSERT_EQ(got[5].elements[0].elements.size(), 2u);
    EXPECT_EQ(got[5].elements[0].elements[0].integer, 1);
    EXPECT_EQ(got[5].elements[0].elements[1].type, Type::kString);
    EXPECT_TRUE(got[5].elements[1].elements.empty());
  }
  ReplyReader reader;
  std::string error;
  Reply r;
  ASSERT_TRUE(reader.feed("?what\r\n", error));
  EXPECT_EQ(reader.next(r, error), -1);
  EXPECT_NE(error.find("protocol error"), std::string::npos);
  EXPECT_FALSE(reader.feed("+OK\r\n", error)) << "a protocol error is final";
  EXPECT_EQ(reader.next(r, error), -1);
}

ClientOptions options_for(const RedisServer& server) {
  ClientOptions o;
  o.endpoint.host = server.host();
  o.endpoint.port = server.port();
  return o;
}

milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
}

// wait_until_ok() retries PING until it succeeds: waiting for a reconnect, bounded.
bool wait_until_ok(Client& client, milliseconds limit = milliseconds(10000)) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (client.command({"PING"}).status.ok()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return false;
}

// --- found by fuzz_redis_reply (docs/reliability.md, "Fuzzing") -------------------------------

// resident_kib() is this process's resident set size.
long resident_kib() {
  long pages = 0, resident = 0;
  std::ifstream("/proc/self/statm") >> pages >> resident;
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

// Bug 2: an array's header alone makes the reader allocate all its elements (72 bytes each)
// before any arrives: "*30000000\r\n" takes 2 GB, and each nested header as much again, so a
// hostile or broken server (or anything between) exhausts memory with a few bytes.
TEST(ReplyReaderTest, AnArrayHeaderAloneAllocatesNothingLarge) {
  const long before = resident_kib();
  ReplyReader reader;
  std::string error;
  Reply r;
  reader.feed("*2\r\n*30000000\r\n", error);
  EXPECT_NE(reader.next(r, error), 1);
  EXPECT_LT(resident_kib() - before, 64 * 1024) << "KiB more resident after 15 bytes";
}

// Bug 3: read_decide_reply() steps the algorithms on any integers a reply holds, where the script
// sends times within +-2^53 us and a sliding log's live entries oldest first. This reply, the
// fuzzer's, gives a sliding log an entry from 1970 after one of 2023: reset_after comes out
// negative; a time near 2^63 overflows the window arithmetic (undefined behaviour). A reply the
// script cannot send must be refused (or at least give verdicts within their contract).
TEST(DecideReplyTest, StatesTheScriptCannotSendAreRefused) {
  const std::string unsorted_log =
      "*1\r\n*3\r\n:1700000000000020\r\n:1\r\n*5\r\n:1700000000000010\r\n:1700000000000000\r\n"
      ":1700000000000000\r\n:22222223\r\n:1700000000000010\r\n:170000000\306000000\r\n"
      ":22222223\r\n:1700000000000020\r\n:3\r\n";
  const std::string time_at_the_end = "*3\r\n:9223372036854775807\r\n:1\r\n*0\r\n";
  const LimitSpec log{.algorithm = Algorithm::kSlidingWindowLog, .limit = 10, .window = 1'000'000};
  const LimitSpec fixed{.algorithm = Algorithm::kFixedWindow, .limit = 10, .window = 1'000'000};
  for (const auto& [bytes, spec, cost] :
       {std::tuple{unsorted_log, &log, 3u}, std::tuple{time_at_the_end, &fixed, 1u}}) {
    ReplyReader reader;
    std::string error;
    Reply reply;
    ASSERT_TRUE(reader.feed(bytes, error));
    ASSERT_EQ(reader.next(reply, error), 1);
    const Reply& one = reply.elements.size() == 1 ? reply.elements[0] : reply;
    const Hit hits[] = {{.key = "k", .spec = spec, .cost = cost}};
    Verdict out[1];
    const StoreStatus status = read_decide_reply(one, hits, out);
    if (!status.ok()) continue;  // refused: what a fix is likely to do
    EXPECT_GE(out[0].reset_after, 0);
    EXPECT_GE(out[0].retry_after, 0);
    EXPECT_LE(out[0].remaining, spec->limit);
  }
}

TEST(EndpointTest, ToString) {
  EXPECT_EQ(Endpoint{}.to_string(), "127.0.0.1:6379");
  EXPECT_EQ((Endpoint{.host = "redis.local", .port = 7000}).to_string(), "redis.local:7000");
  EXPECT_EQ((Endpoint{.host = "::1", .port = 7000}).to_string(), "[::1]:7000");
  EXPECT_EQ((Endpoint{.unix_path = "/run/redis.sock"}).to_string(), "unix:/run/redis.sock");
}

TEST(RedisClientTest, RepliesOfEveryType) {
  RedisServer server;
  Client client(options_for(server));
  ASSERT_TRUE(client.connected());

  CommandResult r = client.command({"PING"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.type, Type::kStatus);
  EXPECT_EQ(r.reply.str, "PONG");

  r = client.command({"GET", "missing"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.type, Type::kNil);

  const std::string binary("a\0b\r\nc", 6);
  r = client.command({"SET", "k", binary});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.type, Type::kStatus);
  EXPECT_EQ(r.reply.str, "OK");

  r = client.command({"GET", "k"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.type, Type::kString);
  EXPECT_EQ(r.reply.str, binary);

  r = client.command({"INCR", "n"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.type, Type::kInteger);
  EXPECT_EQ(r.reply.integer, 1);
  r = client.command({"INCRBY", "n", "-5"});
  EXPECT_EQ(r.reply.integer, -4);

  // An error reply is a successful round trip.
  r = client.command({"INCR", "k"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_TRUE(r.reply.is_error());
  EXPECT_NE(r.reply.str.find("not an integer"), std::string::npos) << r.reply.str;

  r = client.command({"EVALSHA", "0123456789012345678901234567890123456789", "0"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.type, Type::kError);
  EXPECT_EQ(r.reply.str.rfind("NOSCRIPT", 0), 0u) << r.reply.str;

  r = client.command({"EVAL", "return {1,'a',{2,{'x'}},false}", "0"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  ASSERT_EQ(r.reply.type, Type::kArray);
  ASSERT_EQ(r.reply.elements.size(), 4u);
  EXPECT_EQ(r.reply.elements[0].type, Type::kInteger);
  EXPECT_EQ(r.reply.elements[0].integer, 1);
  EXPECT_EQ(r.reply.elements[1].type, Type::kString);
  EXPECT_EQ(r.reply.elements[1].str, "a");
  const Reply& nested = r.reply.elements[2];
  ASSERT_EQ(nested.type, Type::kArray);
  ASSERT_EQ(nested.elements.size(), 2u);
  EXPECT_EQ(nested.elements[0].integer, 2);
  ASSERT_EQ(nested.elements[1].type, Type::kArray);
  ASSERT_EQ(nested.elements[1].elements.size(), 1u);
  EXPECT_EQ(nested.elements[1].elements[0].str, "x");
  EXPECT_EQ(r.reply.elements[3].type, Type::kNil);  // Lua false -> nil

  r = client.command({"EVAL", "return {}", "0"});
  ASSERT_EQ(r.reply.type, Type::kArray);
  EXPECT_TRUE(r.reply.elements.empty());

  // A large value spans several reads.
  const std::string big(300 * 1024, 'z');
  ASSERT_TRUE(client.command({"SET", "big", big}).status.ok());
  r = client.command({"GET", "big"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.str, big);

  // The vector overload, with more arguments than fit inline.
  std::vector<std::string> keys;
  std::vector<std::string_view> argv{"DEL"};
  for (int i = 0; i < 40; ++i)
    keys.push_back("key" + std::to_string(i));
  for (const auto& k : keys)
    argv.push_back(k);
  r = client.command(std::span<const std::string_view>(argv));
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.integer, 0);
}

TEST(RedisClientTest, EmptyCommandIsInvalid) {
  RedisServer server;
  Client client(options_for(server));
  EXPECT_EQ(client.command(std::span<const std::string_view>()).status.code, Code::kInvalid);
  auto results = client.pipeline({{"PING"}, {}});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].status.code, Code::kInvalid);
  EXPECT_TRUE(client.pipeline({}).empty());
}

TEST(RedisClientTest, ConcurrentIncrementsArePipelined) {
  RedisServer server;
  // This test is about exact counts and batching; timeouts have tests of their own. On a loaded
  // 2-core CI machine (other test binaries run their own servers alongside) a reply can take
  // over the default 1 s, and a timeout resets the connection by design.
  ClientOptions options = options_for(server);
  options.command_timeout = milliseconds(10000);
  Client client(options);
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20000;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        const CommandResult r = client.command({"INCR", "counter"});
        if (!r.status.ok() || r.reply.type != Type::kInteger) failures.fetch_add(1);
      }
    });
  }
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(failures.load(), 0);
  const CommandResult r = client.command({"GET", "counter"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.str, std::to_string(kThreads * kPerThread));

  const ClientStats stats = client.stats();
  EXPECT_EQ(stats.commands, static_cast<std::uint64_t>(kThreads * kPerThread + 1));
  EXPECT_LT(stats.batches, stats.commands);
  EXPECT_EQ(stats.connects, client.options().connections);
}

TEST(RedisClientTest, PipelineKeepsOrder) {
  RedisServer server;
  Client client(options_for(server));
  const std::vector<std::vector<std::string>> commands = {
      {"SET", "p", "10"},
      {"INCR", "p"},
      {"GET", "p"},
      {"INCR", "nope", "extra"},
      {"RPUSH", "l", "a", "b"},
      {"LRANGE", "l", "0", "-1"},
  };
  const std::vector<CommandResult> results = client.pipeline(commands);
  ASSERT_EQ(results.size(), commands.size());
  for (const auto& r : results)
    ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(results[0].reply.str, "OK");
  EXPECT_EQ(results[1].reply.integer, 11);
  EXPECT_EQ(results[2].reply.str, "11");
  EXPECT_TRUE(results[3].reply.is_error());
  EXPECT_EQ(results[4].reply.integer, 2);
  ASSERT_EQ(results[5].reply.elements.size(), 2u);
  EXPECT_EQ(results[5].reply.elements[1].str, "b");

  // Concurrent pipelines never interleave: each sees its own SET then GET.
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::string key = "pk" + std::to_string(t);
      for (int i = 0; i < 500; ++i) {
        const std::string value = std::to_string(i);
        const auto rs = client.pipeline({{"SET", key, value}, {"GET", key}, {"PING"}});
        if (rs.size() != 3 || !rs[1].status.ok() || rs[1].reply.str != value ||
            rs[2].reply.str != "PONG") {
          mismatches.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(RedisClientTest, AuthenticatesWithPassword) {
  RedisServer server({.password = "s3cret"});
  {
    ClientOptions o = options_for(server);
    o.password = "s3cret";
    Client client(o);
    const CommandResult r = client.command({"SET", "a", "1"});
    ASSERT_TRUE(r.status.ok()) << r.status.message;
    EXPECT_EQ(r.reply.str, "OK");
  }
  {
    ClientOptions o = options_for(server);
    o.username = "default";
    o.password = "s3cret";
    Client client(o);
    const CommandResult r = client.command({"GET", "a"});
    ASSERT_TRUE(r.status.ok()) << r.status.message;
    EXPECT_EQ(r.reply.str, "1");
  }
  {
    ClientOptions o = options_for(server);
    o.password = "wrong";
    const auto start = Clock::now();
    Client client(o);
    EXPECT_FALSE(client.connected());
    const CommandResult r = client.command({"GET", "a"});
    EXPECT_LT(since(start), milliseconds(2000));
    EXPECT_EQ(r.status.code, Code::kUnavailable);
    EXPECT_NE(r.status.message.find("WRONGPASS"), std::string::npos) << r.status.message;
  }
  {
    Client client(options_for(server));  // no password: PING gets NOAUTH
    const CommandResult r = client.command({"GET", "a"});
    EXPECT_EQ(r.status.code, Code::kUnavailable);
    EXPECT_NE(r.status.message.find("NOAUTH"), std::string::npos) << r.status.message;
  }
}

TEST(RedisClientTest, SelectsDatabase) {
  RedisServer server;
  ClientOptions o = options_for(server);
  o.database = 3;
  Client client(o);
  ASSERT_TRUE(client.command({"SET", "dbkey", "three"}).status.ok());
  const CommandResult info = client.command({"CLIENT", "INFO"});
  ASSERT_TRUE(info.status.ok()) << info.status.message;
  EXPECT_NE(info.reply.str.find(" db=3 "), std::string::npos) << info.reply.str;
  EXPECT_EQ(server.command({"GET", "dbkey"}), "(nil)");  // not in db 0

  ClientOptions bad = options_for(server);
  bad.database = 999;
  Client bad_client(bad);
  const CommandResult r = bad_client.command({"PING"});
  EXPECT_EQ(r.status.code, Code::kUnavailable);
  EXPECT_NE(r.status.message.find("SELECT failed"), std::string::npos) << r.status.message;
}

TEST(RedisClientTest, UnixSocket) {
  RedisServer server({.unix_socket = true});
  ClientOptions o;
  o.endpoint.unix_path = server.unix_path();
  Client client(o);
  ASSERT_TRUE(client.connected());
  CommandResult r = client.command({"INCR", "u"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.integer, 1);
  EXPECT_EQ(server.command({"GET", "u"}), "1");
}

TEST(RedisClientTest, NoServerFailsFast) {
  int port;
  {
    RedisServer server;  // a port that nobody listens on afterwards
    port = server.port();
  }
  ClientOptions o;
  o.endpoint.port = port;
  const auto start = Clock::now();
  Client client(o);
  EXPECT_FALSE(client.connected());
  const CommandResult r = client.command({"PING"});
  EXPECT_EQ(r.status.code, Code::kUnavailable);
  EXPECT_NE(r.status.message.find("connect"), std::string::npos) << r.status.message;
  EXPECT_LT(since(start), milliseconds(1000));
}

TEST(RedisClientTest, RecoversAfterServerRestart) {
  RedisServer server;
  ClientOptions o = options_for(server);
  o.reconnect_max = milliseconds(200);
  Client client(o);
  ASSERT_TRUE(client.command({"SET", "x", "1"}).status.ok());

  server.kill();
  // Calls fail fast: at most one per connection may have been sent before the close was seen,
  // and those fail as soon as the connection does.
  for (int i = 0; i < 20; ++i) {
    const auto start = Clock::now();
    const CommandResult r = client.command({"PING"});
    EXPECT_EQ(r.status.code, Code::kUnavailable) << r.status.message;
    EXPECT_LT(since(start), milliseconds(500));
  }
  EXPECT_FALSE(client.connected());

  server.restart();
  ASSERT_TRUE(wait_until_ok(client));
  const CommandResult r = client.command({"INCR", "x"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.integer, 1);  // a fresh server: no persistence
}

TEST(RedisClientTest, PausedServerTimesOutThenFailsFast) {
  RedisServer server;
  ClientOptions o = options_for(server);
  o.command_timeout = milliseconds(200);
  o.connect_timeout = milliseconds(200);
  o.reconnect_max = milliseconds(200);
  Client client(o);
  const CommandResult first = client.command({"PING"});
  ASSERT_TRUE(first.status.ok()) << first.status.message;

  server.pause();
  auto start = Clock::now();
  CommandResult r = client.command({"INCR", "paused"});
  const milliseconds waited = since(start);
  EXPECT_EQ(r.status.code, Code::kTimeout) << r.status.message;
  EXPECT_GE(waited, milliseconds(190));
  EXPECT_LT(waited, milliseconds(1000));

  // Each connection may cost one more timeout before it is taken out of service; after that,
  // calls fail at once instead of each waiting 200 ms.
  int slow = 0;
  const auto begin = Clock::now();
  for (int i = 0; i < 50; ++i) {
    start = Clock::now();
    r = client.command({"PING"});
    EXPECT_FALSE(r.status.ok());
    if (since(start) >= milliseconds(100)) ++slow;
  }
  EXPECT_LE(slow, static_cast<int>(o.connections) - 1);
  EXPECT_LT(since(begin), milliseconds(1500));
  EXPECT_EQ(client.command({"PING"}).status.code, Code::kUnavailable);

  server.resume();
  ASSERT_TRUE(wait_until_ok(client));
  // Commands sent before the pause that timed out may or may not have run; later ones work.
  r = client.command({"SET", "after", "1"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
}

TEST(RedisClientTest, SlowCommandTimesOutAndConnectionIsReplaced) {
  RedisServer server;
  ClientOptions o = options_for(server);
  o.connections = 1;
  o.command_timeout = milliseconds(200);
  Client client(o);
  // Busy for 400 ms inside the server.
  const char* kSlow =
      "local s = redis.call('TIME') "
      "while true do local n = redis.call('TIME') "
      "if (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 400000 then break end end "
      "return 1";
  auto start = Clock::now();
  CommandResult r = client.command({"EVAL", kSlow, "0"});
  EXPECT_EQ(r.status.code, Code::kTimeout) << r.status.message;
  EXPECT_NE(r.status.message.find("timed out"), std::string::npos) << r.status.message;
  EXPECT_GE(since(start), milliseconds(190));

  // The connection is out of service at once: no second 200 ms wait.
  start = Clock::now();
  r = client.command({"PING"});
  EXPECT_EQ(r.status.code, Code::kUnavailable) << r.status.message;
  EXPECT_LT(since(start), milliseconds(100));

  ASSERT_TRUE(wait_until_ok(client));
  EXPECT_GE(client.stats().connects, 2u);
  r = client.command({"INCR", "after-slow"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.integer, 1);  // FIFO matching survived: this is INCR's reply, not EVAL's
}

TEST(RedisClientTest, DestroyWhileCommandsAreAbandoned) {
  RedisServer server;
  ClientOptions o = options_for(server);
  o.command_timeout = milliseconds(100);
  o.connect_timeout = milliseconds(100);
  auto client = std::make_unique<Client>(o);
  ASSERT_TRUE(client->command({"PING"}).status.ok());
  server.pause();
  std::atomic<int> bad{0};  // results that claim success, or fail without saying why
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 3; ++i) {
        for (const CommandResult& r : client->pipeline({{"PING"}, {"PING"}})) {
          if (r.status.ok() || r.status.message.empty()) bad.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(bad.load(), 0);
  client.reset();  // abandoned calls still queued on the paused connection are freed here
  server.resume();
}

}  // namespace
}  // namespace sluice::redis
