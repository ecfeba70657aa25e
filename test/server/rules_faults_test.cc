// Faults around the rules (docs/reliability.md): the rules directory gone or replaced by a
// file, a rule file replaced by a half-written one, and the disk full (a real tmpfs, and a file
// size limit) while an admin change is persisted. In each, the server keeps serving the last
// good rules, says what is wrong (metrics, the API's answer), leaves nothing half-written, and
// takes the next good version. (The directory made unreadable by its permissions is in
// serve_process_test.cc: tests run as root, so that one runs `sluice serve` as nobody.)
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "server/fixture_rules.h"
#include "server/rules_manager.h"
#include "server/server_fixture.h"

namespace sluice::testing {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

// A watcher that looks often, so that the tests wait little.
ServerOptions QuickWatch() {
  ServerOptions o;
  o.watch_interval = std::chrono::milliseconds(20);
  return o;
}

// hidden_files() lists the names starting with '.' in `dir` (temporary files left behind).
std::vector<std::string> hidden_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().starts_with(".")) out.push_back(entry.path().string());
  return out;
}

// A server over a rules directory holding live.yaml (10 per minute), watched every 20 ms.
class RulesFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    dir.write("live.yaml", live_rules(10));
    h = std::make_unique<ServerHarness>(dir.path(), QuickWatch());
    port = h->http_port();
    ASSERT_EQ(current_limit(port, "live", "k"), 10);
    generation = h->server->rules().generation();
  }

  TempDir dir;
  std::unique_ptr<ServerHarness> h;
  int port = 0;
  std::uint64_t generation = 0;
};

TEST_F(RulesFaults, DirectoryGoneOrReplacedByAFileKeepsTheLastGoodRules) {
  const std::string moved = dir.path() + ".moved";

  // The directory disappears: a reload error, the last good rules keep deciding.
  long errors = reload_errors(port);
  fs::rename(dir.path(), moved);
  EXPECT_TRUE(eventually([&] { return reload_errors(port) > errors; }));
  EXPECT_EQ(current_limit(port, "live", "k"), 10);
  EXPECT_EQ(h->post("/json", envoy_json("live", {{"k", "a"}})).status, 200);
  // An admin change cannot be persisted: refused, nothing changes.
  HttpReply put = h->admin("PUT", "/v1/rules/live", live_rules(99));
  EXPECT_EQ(put.status, 500) << put.body;
  EXPECT_EQ(current_limit(port, "live", "k"), 10);

  // A regular file where the directory was: another error, the same rules.
  errors = reload_errors(port);
  std::ofstream(dir.path()) << "not a directory\n";
  EXPECT_TRUE(eventually([&] { return reload_errors(port) > errors; }));
  EXPECT_EQ(current_limit(port, "live", "k"), 10);
  EXPECT_EQ(h->server->rules().generation(), generation);

  // The directory comes back with a new version: taken.
  fs::remove(dir.path());
  fs::rename(moved, dir.path());
  dir.replace("live.yaml", live_rules(11));
  EXPECT_TRUE(eventually([&] { return current_limit(port, "live", "k") == 11; }));
  EXPECT_GT(h->server->rules().generation(), generation);
}

TEST_F(RulesFaults, HalfWrittenFileIsRefusedUntilTheWholeFileArrives) {
  // Written in place and cut off mid-line, as by a writer that died (or has not finished).
  const std::string whole = live_rules(11);
  const long errors = reload_errors(port);
  dir.write("live.yaml", whole.substr(0, whole.find("requests_per_unit") + 8));
  EXPECT_TRUE(eventually([&] { return reload_errors(port) > errors; }));
  EXPECT_EQ(current_limit(port, "live", "k"), 10);
  EXPECT_EQ(h->server->rules().generation(), generation);
  EXPECT_EQ(h->admin("GET", "/v1/rules/live").body, live_rules(10)) << "the served text";

  // The rest arrives: the whole file is taken.
  dir.write("live.yaml", whole);
  EXPECT_TRUE(eventually([&] { return current_limit(port, "live", "k") == 11; }));
  EXPECT_EQ(h->admin("GET", "/v1/rules/live").body, whole);
}

// A rule file bigger than one page, so that a write into the last free page is a short one.
std::string big_rules() {
  std::string text = kEnvoyRulesTight;
  for (int i = 0; text.size() < 12'000; ++i)
    text += "# padding line " + std::to_string(i) + ": a rule file with long comments\n";
  return text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// expect_change_refused() PUTs big_rules() into a server whose disk cannot take it: the API
// answers 500 saying `why`, no temporary file remains in `dir`, the file and the running rules
// are unchanged.
void expect_change_refused(const ServerHarness& h, const std::string& dir, const std::string& why) {
  HttpReply put = h.admin("PUT", "/v1/rules/test", big_rules());
  EXPECT_EQ(put.status, 500) << put.body;
  EXPECT_NE(put.body.find(why), std::string::npos) << put.body;
  EXPECT_NE(put.body.find("cannot write"), std::string::npos) << put.body;  // not create
  EXPECT_EQ(hidden_files(dir), std::vector<std::string>{}) << "a temporary file left behind";
  EXPECT_EQ(read_file(dir + "/test.yaml"), kEnvoyRules);
  EXPECT_EQ(h.admin("GET", "/v1/rules/test").body, kEnvoyRules);
  EXPECT_EQ(current_limit(h.http_port(), "test", "key2"), 20) << "the running rules";
}

// expect_change_made() PUTs big_rules() again, now that there is room: made, all of it.
void expect_change_made(const ServerHarness& h, const std::string& dir) {
  HttpReply put = h.admin("PUT", "/v1/rules/test", big_rules());
  EXPECT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(read_file(dir + "/test.yaml"), big_rules());
  EXPECT_EQ(hidden_files(dir), std::vector<std::string>{});
  EXPECT_EQ(h.admin("GET", "/v1/rules/test").body, big_rules());
  EXPECT_EQ(current_limit(h.http_port(), "test", "key2"), -1) << "key2 alone has no limit now";
}

// TmpfsMount is a tiny tmpfs mounted on a temp dir (unmounted at the end), or nothing when this
// process may not mount (then ok() is false and error() says why).
class TmpfsMount {
 public:
  explicit TmpfsMount(const std::string& size) {
    if (::mount("tmpfs", base_.path().c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0) {
      mounted_ = true;
    } else {
      error_ = std::strerror(errno);
    }
  }
  ~TmpfsMount() {
    if (mounted_) ::umount2(base_.path().c_str(), MNT_DETACH);
  }
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;
  bool ok() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::string& path() const { return base_.path(); }

 private:
  TempDir base_;
  bool mounted_ = false;
  std::string error_;
};

// The disk full, for real: the rules directory on a 256 KiB tmpfs, filled up but for one page, so
// that the change's first write is short (one page) and the next fails with ENOSPC.
TEST(RulesPersistFaults, DiskFullWhilePersistingAnAdminChange) {
  TmpfsMount disk("256k");
  if (!disk.ok()) GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.error() << ")";
  const std::string dir = disk.path() + "/rules";
  fs::create_directory(dir);
  std::ofstream(dir + "/test.yaml") << kEnvoyRules;
  std::ofstream(dir + "/other.yaml") << kEnvoyRulesOther;
  ServerHarness h(dir, QuickWatch());

  const std::string filler = disk.path() + "/filler";
  {
    std::ofstream out(filler, std::ios::binary);
    const std::string page(4096, 'x');
    while (out.write(page.data(), static_cast<std::streamsize>(page.size())) && out.flush()) {
    }
  }
  fs::resize_file(filler, fs::file_size(filler) - 4096);

  expect_change_refused(h, dir, "No space left on device");
  // Removing a file needs no room: DELETE still works.
  EXPECT_EQ(h.admin("DELETE", "/v1/rules/other").status, 200);
  EXPECT_FALSE(fs::exists(dir + "/other.yaml"));

  fs::remove(filler);
  expect_change_made(h, dir);
}

// The same through a file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored): the write past 4 KiB
// fails with EFBIG after a short write. Runs wherever the tmpfs cannot be mounted too. The limit
// binds this whole process for the one request: a log line written meanwhile into a regular file
// already past 4 KiB is lost (stdout and stderr to a terminal or pipe are not limited).
TEST(RulesPersistFaults, FileSizeLimitWhilePersistingAnAdminChange) {
  TempDir dir;
  dir.write("test.yaml", kEnvoyRules);
  ServerHarness h(dir.path(), QuickWatch());

  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &before), 0);
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit small = before;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  HttpReply put = h.admin("PUT", "/v1/rules/test", big_rules());
  ::setrlimit(RLIMIT_FSIZE, &before);
  ::signal(SIGXFSZ, old_handler);

  EXPECT_EQ(put.status, 500) << put.body;
  EXPECT_NE(put.body.find("File too large"), std::string::npos) << put.body;
  EXPECT_EQ(hidden_files(dir.path()), std::vector<std::string>{});
  EXPECT_EQ(dir.read("test.yaml"), kEnvoyRules);
  EXPECT_EQ(current_limit(h.http_port(), "test", "key2"), 20);
  expect_change_made(h, dir.path());
}

}  // namespace
}  // namespace sluice::testing
