// Runs the real `sluice` binary and checks what it prints and its exit code.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "support/redis_harness.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  return lines;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("sluice_cli_test_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }

  // run() runs sluice with `args`, capturing stdout, stderr and the exit code.
  Result run(const std::vector<std::string>& args) {
    const fs::path out = dir_ / "stdout", err = dir_ / "stderr";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> storage{SLUICE_BIN};
    storage.insert(storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& s : storage)
      argv.push_back(s.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    Result r;
    const int spawned = posix_spawn(&pid, SLUICE_BIN, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) {
      ADD_FAILURE() << "cannot run " << SLUICE_BIN;
      return r;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = read_file(out);
    r.err = read_file(err);
    return r;
  }

  fs::path dir_;
};

// --- version, help, bad command lines ---------------------------------------------------------

TEST_F(CliTest, Version) {
  Result r = run({"version"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, MatchesRegex("sluice [0-9]+\\.[0-9]+\\.[0-9]+\n"));
  EXPECT_EQ(run({"--version"}).out, r.out);
}

TEST_F(CliTest, HelpExplainsEveryFlag) {
  Result r = run({"check", "--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* flag : {"--config", "--domain", "--descriptor", "--path", "--data", "--cost",
                           "--times", "--json"}) {
    EXPECT_THAT(r.out, HasSubstr(flag));
  }
  r = run({"replay", "--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* flag : {"--config", "--trace", "--json"})
    EXPECT_THAT(r.out, HasSubstr(flag));
  r = run({"--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* command : {"validate", "check", "replay", "demo", "version"})
    EXPECT_THAT(r.out, HasSubstr(command));
}

TEST_F(CliTest, BadCommandLinesExitTwo) {
  Result r = run({"frobnicate"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command 'frobnicate'"));
  EXPECT_EQ(run({}).code, 2);
  EXPECT_EQ(run({"check", "--config", "x", "--bogus"}).code, 2);
  EXPECT_EQ(run({"check", "--domain", "d"}).code, 2);  // --config is required
  EXPECT_EQ(run({"validate"}).code, 2);
  EXPECT_EQ(run({"check", "--config", "x", "--times", "many"}).code, 2);
}

// --- validate ---------------------------------------------------------------------------------

TEST_F(CliTest, ValidateExamples) {
  Result r = run({"validate", SLUICE_EXAMPLES});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "ok: 2 domains, 2 path rules, 19 limits\n");
  r = run({"validate", std::string(SLUICE_EXAMPLES) + "/demo.yaml"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "ok: 1 domain, 0 path rules, 4 limits\n");
}

TEST_F(CliTest, ValidateReportsEveryErrorWithItsLocation) {
  const fs::path bad = write("bad.yaml",
                             "domain: t\n"
                             "descriptors:\n"
                             "  - key: user\n"
                             "    rate_limit:\n"
                             "      requests_per_unit: ten\n"
                             "      unit: second\n");
  const fs::path bad2 = write("bad2.yaml",
                              "domain: u\n"
                              "descriptors:\n"
                              "  - key: user\n"
                              "    rate_limit: {unit: fortnight, requests_per_unit: 1}\n");
  Result r = run({"validate", bad.string(), bad2.string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "");
  const std::vector<std::string> errors = lines_of(r.err);
  ASSERT_EQ(errors.size(), 2u) << r.err;
  EXPECT_THAT(errors[0], StartsWith(bad.string() + ":5:26: "));
  EXPECT_THAT(errors[0], HasSubstr("requests_per_unit"));
  EXPECT_THAT(errors[1], StartsWith(bad2.string() + ":4:24: "));
  EXPECT_THAT(errors[1], HasSubstr("fortnight"));

  r = run({"validate", (dir_ / "missing.yaml").string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("missing.yaml"));
}

// --- check ------------------------------------------------------------------------------------

// A sliding log, so that five hits made within a second decide the same whatever the wall
// clock's alignment.
constexpr const char* kThreePerSecond =
    "domain: api\n"
    "descriptors:\n"
    "  - key: remote_address\n"
    "    rate_limit: {unit: second, requests_per_unit: 3, algorithm: sliding_window_log}\n";

TEST_F(CliTest, CheckHuman) {
  const fs::path config = write("api.yaml", kThreePerSecond);
  Result r = run({"check", "--config", config.string(), "--domain", "api", "--descriptor",
                  "remote_address=10.0.0.1", "--times", "5"});
  EXPECT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 5u) << r.out;
  EXPECT_EQ(lines[0],
            "#1 allowed  limit=3 remaining=2 reset_after=1000ms  [api.remote_address: "
            "sliding_window_log 3/second remaining 2]");
  EXPECT_EQ(lines[1],
            "#2 allowed  limit=3 remaining=1 reset_after=1000ms  [api.remote_address: "
            "sliding_window_log 3/second remaining 1]");
  EXPECT_EQ(lines[2],
            "#3 allowed  limit=3 remaining=0 reset_after=1000ms  [api.remote_address: "
            "sliding_window_log 3/second remaining 0]");
  for (int i : {3, 4}) {
    EXPECT_THAT(lines[i], MatchesRegex("#" + std::to_string(i + 1) +
                                       " DENIED   limit=3 remaining=0 reset_after=[0-9]+ms "
                                       "retry_after=[0-9]+ms  \\[api.remote_address: "
                                       "sliding_window_log 3/second remaining 0, denied\\]"));
  }
}

TEST_F(CliTest, CheckJson) {
  const fs::path config = write("api.yaml", kThreePerSecond);
  Result r = run({"check", "--config", config.string(), "--domain", "api", "--descriptor",
                  "remote_address=10.0.0.1", "--times", "5", "--json"});
  EXPECT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 5u) << r.out;
  const bool allowed[] = {true, true, true, false, false};
  const int remaining[] = {2, 1, 0, 0, 0};
  for (std::size_t i = 0; i < 5; ++i) {
    const nlohmann::json j = nlohmann::json::parse(lines[i]);
    EXPECT_EQ(j["allowed"], allowed[i]) << lines[i];
    EXPECT_EQ(j["limit"], 3);
    EXPECT_EQ(j["remaining"], remaining[i]);
    ASSERT_EQ(j["statuses"].size(), 1u);
    const nlohmann::json& st = j["statuses"][0];
    EXPECT_EQ(st["descriptor"],
              nlohmann::json::parse(R"([{"key": "remote_address", "value": "10.0.0.1"}])"));
    EXPECT_EQ(st["name"], "api.remote_address");
    EXPECT_EQ(st["algorithm"], "sliding_window_log");
    EXPECT_EQ(st["allowed"], allowed[i]);
    EXPECT_EQ(st["shadow"], false);
    if (allowed[i]) {
      EXPECT_EQ(j["retry_after_ms"], 0);
      EXPECT_EQ(j["reset_after_ms"], 1000);
    } else {
      EXPECT_GE(j["retry_after_ms"], 1);
      EXPECT_LE(j["retry_after_ms"], 1000);
    }
  }
}

TEST_F(CliTest, CheckPathRulesAndCostZero) {
  Result r = run({"check", "--config", SLUICE_EXAMPLES, "--path", "/login", "--data",
                  "user_id=42,ip=1.2.3.4", "--json", "--cost", "0", "--times", "2"});
  EXPECT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  for (const std::string& line : lines) {  // cost 0 checks without consuming
    const nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j["allowed"], true);
    EXPECT_EQ(j["remaining"], 5);
    EXPECT_EQ(j["statuses"][0]["name"], "path:/login.user_id");
    EXPECT_EQ(j["statuses"][0]["descriptor"],
              nlohmann::json::parse(R"([{"key": "path", "value": "/login"},
                                        {"key": "user_id", "value": "42"}])"));
  }
}

TEST_F(CliTest, CheckKeyAloneMeansEmptyValue) {
  const fs::path config = write("d.yaml",
                                "domain: d\n"
                                "descriptors:\n"
                                "  - key: flag\n"
                                "    rate_limit: {unit: hour, requests_per_unit: 7}\n");
  Result r = run(
      {"check", "--config", config.string(), "--domain", "d", "--descriptor", "flag", "--json"});
  EXPECT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["statuses"][0]["descriptor"],
            nlohmann::json::parse(R"([{"key": "flag", "value": ""}])"));
  EXPECT_EQ(j["remaining"], 6);
}

TEST_F(CliTest, CheckBadArgumentsExitOne) {
  const fs::path config = write("api.yaml", kThreePerSecond);
  const std::string c = config.string();
  Result r = run({"check", "--config", c});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("--domain"));
  r = run({"check", "--config", c, "--domain", "api", "--descriptor", "=v"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("--descriptor"));
  r = run({"check", "--config", c, "--domain", "api"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("--descriptor"));
  r = run({"check", "--config", c, "--domain", "api", "--descriptor", "a=b", "--path", "/x"});
  EXPECT_EQ(r.code, 1);
  r = run({"check", "--config", c, "--domain", "api", "--descriptor", "a=b", "--cost=-1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("--cost"));
  r = run({"check", "--config", c, "--domain", "api", "--descriptor", "a=b", "--times", "0"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("--times"));
  const fs::path bad = write("bad.yaml", "domain: [\n");
  r = run({"check", "--config", bad.string(), "--domain", "api", "--descriptor", "a=b"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr(bad.string() + ":"));
  EXPECT_EQ(r.out, "");
}

// --- replay -----------------------------------------------------------------------------------

constexpr const char* kReplayRules =
    "domain: t\n"
    "descriptors:\n"
    "  - key: user\n"
    "    rate_limit: {unit: second, requests_per_unit: 2}\n"
    "  - key: bucket\n"
    "    rate_limit: {unit: second, requests_per_unit: 1, algorithm: token_bucket}\n"
    "  - key: shadowed\n"
    "    shadow_mode: true\n"
    "    rate_limit: {unit: minute, requests_per_unit: 1}\n";

std::string hit(const std::string& t, const std::string& key, const std::string& value) {
  return R"({"t": )" + t + R"(, "domain": "t", "descriptors": [{"entries": [{"key": ")" + key +
         R"(", "value": ")" + value + R"("}]}]})" + "\n";
}

// Every outcome here depends on the trace's times: the hits that pass do so only because a
// window ended (or tokens came back) by the microsecond the trace says.
std::string replay_trace() {
  return hit("1700000000.2", "user", "a") +         // allowed, 1 left
         hit("1700000000.5", "user", "a") +         // allowed, 0 left
         hit("1700000000.999999", "user", "a") +    // denied: 1 us of the window left
         "\n" +                                     // blank: skipped
         hit("1700000001.000000", "user", "a") +    // allowed: a new window
         hit("1700000001.000001", "user", "a") +    // allowed, 0 left
         hit("1700000001.5", "user", "a") +         // denied, 500 ms to go
         hit("1700000002.0", "bucket", "b") +       // allowed: the bucket starts full
         hit("1700000002.999999", "bucket", "b") +  // denied: 1 us short of a token
         hit("1.700000003e9", "bucket", "b") +      // allowed: a token is back
         hit("1700000003.0", "shadowed", "c") +     // allowed
         hit("1700000003.1", "shadowed", "c");      // shadow-denied, allowed
}

TEST_F(CliTest, ReplayJsonDecisionsFollowTheTraceClock) {
  const fs::path rules = write("rules.yaml", kReplayRules);
  const fs::path trace = write("trace.jsonl", replay_trace());
  Result r = run({"replay", "--config", rules.string(), "--trace", trace.string(), "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 11u + 1) << r.out;  // a decision per hit, then the summary

  struct Expect {
    bool allowed;
    int remaining, reset_ms, retry_ms;
  };
  const Expect expected[] = {
      {true, 1, 800, 0},  {true, 0, 500, 0},  {false, 0, 1, 1},
      {true, 1, 1000, 0}, {true, 0, 1000, 0}, {false, 0, 500, 500},
      {true, 0, 1000, 0}, {false, 0, 1, 1},   {true, 0, 1000, 0},
  };
  for (std::size_t i = 0; i < std::size(expected); ++i) {
    const nlohmann::json j = nlohmann::json::parse(lines[i]);
    EXPECT_EQ(j["allowed"], expected[i].allowed) << i << ": " << lines[i];
    EXPECT_EQ(j["remaining"], expected[i].remaining) << i << ": " << lines[i];
    EXPECT_EQ(j["reset_after_ms"], expected[i].reset_ms) << i << ": " << lines[i];
    EXPECT_EQ(j["retry_after_ms"], expected[i].retry_ms) << i << ": " << lines[i];
  }
  // One line in full.
  EXPECT_EQ(lines[2],
            R"({"allowed":false,"limit":2,"remaining":0,"reset_after_ms":1,"retry_after_ms":1,)"
            R"("statuses":[{"algorithm":"fixed_window","allowed":false,"descriptor":[{"key":)"
            R"("user","value":"a"}],"limit":2,"name":"t.user","remaining":0,"reset_after_ms":1,)"
            R"("retry_after_ms":1,"shadow":false}]})");
  // Shadow mode: the limit denies, the request passes.
  const nlohmann::json shadow = nlohmann::json::parse(lines[10]);
  EXPECT_EQ(shadow["allowed"], true);
  EXPECT_EQ(shadow["statuses"][0]["allowed"], false);
  EXPECT_EQ(shadow["statuses"][0]["shadow"], true);
  EXPECT_EQ(lines.back(),
            R"({"summary":[{"name":"t.user","hits":6,"allowed":4,"denied":2},)"
            R"({"name":"t.bucket","hits":3,"allowed":2,"denied":1},)"
            R"({"name":"t.shadowed","hits":2,"allowed":1,"denied":0,"shadow_denied":1}]})");
}

TEST_F(CliTest, ReplayHuman) {
  const fs::path rules = write("rules.yaml", kReplayRules);
  const fs::path trace = write("trace.jsonl", replay_trace());
  Result r = run({"replay", "--config", rules.string(), "--trace", trace.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 11u + 1 + 1 + 1 + 3) << r.out;
  EXPECT_EQ(lines[2],
            "line 3 t=1700000000.999999 DENIED   limit=2 remaining=0 reset_after=1ms "
            "retry_after=1ms  [t.user: fixed_window 2/second remaining 0, denied]");
  EXPECT_EQ(lines[3],
            "line 5 t=1700000001.000000 allowed  limit=2 remaining=1 reset_after=1000ms  "
            "[t.user: fixed_window 2/second remaining 1]");
  EXPECT_EQ(lines[8],
            "line 10 t=1700000003.000000 allowed  limit=1 remaining=0 reset_after=1000ms  "
            "[t.bucket: token_bucket 1/second remaining 0]");
  EXPECT_EQ(lines[10],
            "line 12 t=1700000003.100000 allowed  limit=0 remaining=0 reset_after=0ms  "
            "[t.shadowed: fixed_window 1/minute remaining 0, denied (shadow: not enforced)]");
  EXPECT_EQ(lines[12], "11 requests: 8 allowed, 3 denied");
  EXPECT_THAT(lines[13], MatchesRegex("rule +hits +allowed +denied +shadow-denied"));
  EXPECT_THAT(lines[14], MatchesRegex("t.user +6 +4 +2"));
  EXPECT_THAT(lines[15], MatchesRegex("t.bucket +3 +2 +1"));
  EXPECT_THAT(lines[16], MatchesRegex("t.shadowed +2 +1 +0 +1"));
}

TEST_F(CliTest, ReplayIsDeterministic) {
  const fs::path rules = write("rules.yaml", kReplayRules);
  const fs::path trace = write("trace.jsonl", replay_trace());
  for (const char* mode : {"--json", ""}) {
    std::vector<std::string> args{"replay", "--config", rules.string(), "--trace", trace.string()};
    if (*mode != '\0') args.push_back(mode);
    Result a = run(args);
    Result b = run(args);
    EXPECT_EQ(a.code, 0);
    EXPECT_FALSE(a.out.empty());
    EXPECT_EQ(a.out, b.out);
  }
}

TEST_F(CliTest, ReplayBadLineNamesItAndReplaysNothing) {
  const fs::path rules = write("rules.yaml", kReplayRules);
  const fs::path trace =
      write("trace.jsonl", hit("1700000000", "user", "a") + "\n" +
                               R"({"t": 1700000001, "domain": "t", )"
                               R"("descriptors": [{"entries": [{"key": )"
                               R"("user", "value": 7}]}]})" +
                               "\n" + hit("1700000002", "user", "a") + "not json\n");
  Result r = run({"replay", "--config", rules.string(), "--trace", trace.string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr(trace.string() +
                               ":3: descriptors[0].entries[0].value: expected a string, got a "
                               "number\n"));
  EXPECT_THAT(r.err, HasSubstr(trace.string() + ":5: parse error"));
  EXPECT_THAT(r.err, HasSubstr("2 bad lines"));

  r = run({"replay", "--config", rules.string(), "--trace", (dir_ / "none.jsonl").string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("none.jsonl"));
}

TEST_F(CliTest, ReplayExampleTrace) {
  Result r = run({"replay", "--config", SLUICE_EXAMPLES, "--trace",
                  std::string(SLUICE_EXAMPLES) + "/trace.jsonl", "--json"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(R"({"summary":[)"));
}

// --- demo -------------------------------------------------------------------------------------

TEST_F(CliTest, Demo) {
  Result r = run({"demo", "--config", SLUICE_EXAMPLES});
  EXPECT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = lines_of(r.out);
  EXPECT_LT(lines.size(), 70u);
  EXPECT_THAT(r.out, HasSubstr("fixed_window 5/second: 9 of 11 allowed"));
  EXPECT_THAT(r.out, HasSubstr("sliding_window_log 5/second: 7 of 11 allowed"));
  EXPECT_THAT(r.out, HasSubstr("sliding_window_counter 5/second: 6 of 11 allowed"));
  EXPECT_THAT(r.out, HasSubstr("token_bucket 5/second: 10 of 11 allowed"));
  EXPECT_THAT(r.out, HasSubstr("window 0 full: 5/5 used, retry in 500ms"));

  const fs::path other = write("other.yaml", kThreePerSecond);
  r = run({"demo", "--config", other.string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("demo"));
}

}  // namespace

namespace sluice {
namespace {

// The same trace replays to the same output through the memory store and through a real Redis.
TEST_F(CliTest, ReplayIsIdenticalOnMemoryAndRedis) {
  testing::RedisServer redis;
  const std::string config = SLUICE_EXAMPLES;
  const std::string trace = std::string(SLUICE_EXAMPLES) + "/trace.jsonl";
  for (const char* format : {"--json", ""}) {
    std::vector<std::string> args{"replay", "--config", config, "--trace", trace};
    if (*format != '\0') args.emplace_back(format);
    std::vector<std::string> on_memory = args, on_redis = args;
    on_memory.insert(on_memory.end(), {"--storage", "memory://"});
    on_redis.insert(on_redis.end(),
                    {"--storage", "redis://127.0.0.1:" + std::to_string(redis.port()) +
                                      "?prefix=replay" + std::string(format) + ":"});
    const Result memory = run(on_memory);
    const Result shared = run(on_redis);
    ASSERT_EQ(memory.code, 0) << memory.err;
    ASSERT_EQ(shared.code, 0) << shared.err;
    EXPECT_GT(lines_of(memory.out).size(), 10u);
    EXPECT_EQ(shared.out, memory.out);
  }
}

TEST_F(CliTest, BadStorageUrlIsAClearError) {
  const Result r = run({"check", "--config", SLUICE_EXAMPLES, "--domain", "demo", "--descriptor",
                        "algorithm=token_bucket", "--storage", "redis://host:notaport"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("port"));
}

}  // namespace
}  // namespace sluice
