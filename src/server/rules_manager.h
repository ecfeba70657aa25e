// Live rules: the snapshot being served, reloaded when its files change, and changed through
// the admin API with every change persisted into the rules directory.
//
// The manager keeps the text of every rule file of the current snapshot. A reload (a file
// changed on disk) and an API change (a new text for one file, or one file less) both build a
// whole new snapshot from texts, validated exactly as `sluice validate` does; only a snapshot
// without errors replaces the running one, atomically, so a bad edit changes nothing.
//
// An API change is persisted before it is served: the file is written to a hidden temporary
// file in the rules directory, fsynced, renamed over the old one, and the directory fsynced,
// so a restart (or a crash) keeps it. The files are named by the API's name: an Envoy rule file
// for domain D is the file that defines D, or D.yaml when none does; a path-rule file is
// D.yaml.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "sluice/config.h"
#include "sluice/rules.h"

namespace sluice::server {

class Metrics;

// RulesChange is the outcome of an API change.
struct RulesChange {
  int status = 200;                 // 200 replaced, 201 created, 400 invalid, 404 unknown, 409, 500
  std::string message;              // what happened, or why not
  std::vector<std::string> errors;  // located errors of invalid rules
  std::string file;                 // the file written or removed
  std::uint64_t generation = 0;     // the snapshot serving after the change
};

class RulesManager {
 public:
  using Listener = std::function<void(const std::shared_ptr<const RuleSet>&)>;

  // `paths`: files and directories (as --config); empty serves the embedded example rules. The
  // API can change rules only when `paths` is exactly one directory. `on_change` is called with
  // every new snapshot (under the manager's lock, so calls never overlap).
  RulesManager(std::vector<std::string> paths, Listener on_change, Metrics* metrics = nullptr);
  ~RulesManager();
  RulesManager(const RulesManager&) = delete;
  RulesManager& operator=(const RulesManager&) = delete;

  // load() loads the first snapshot; on failure returns false with every error.
  bool load(std::vector<ConfigError>& errors);
  // watch() starts checking the files every `interval` (nothing to watch for embedded rules).
  void watch(std::chrono::milliseconds interval);
  // stop() stops watching. Idempotent.
  void stop();
  // check_files() reloads now if the files changed since the last look; returns true when a
  // new snapshot is serving. (The watcher calls it; tests may too.)
  bool check_files();

  // put() replaces (or creates) the rule file `name` with `text` (YAML or JSON).
  RulesChange put(std::string_view name, std::string_view text);
  // remove() removes the rule file `name`.
  RulesChange remove(std::string_view name);
  // get() returns the text of the rule file `name`, or nullopt.
  std::optional<std::string> get(std::string_view name) const;
  // list() describes the snapshot: {"generation", "writable", "directory", "files": [{"name",
  // "file", "domains": [...], "path_rules": n}]}.
  nlohmann::json list() const;

  std::shared_ptr<const RuleSet> current() const;
  std::uint64_t generation() const;
  bool writable() const noexcept { return !directory_.empty(); }
  const std::string& directory() const noexcept { return directory_; }

  // valid_name() tells whether `name` can name a rule file: 1-128 of [A-Za-z0-9_.-], not
  // starting with '.'.
  static bool valid_name(std::string_view name);

 private:
  struct File {
    std::string text;
    std::vector<std::string> domains;
    std::size_t path_rules = 0;
  };
  using Files = std::map<std::string, File>;  // by path, in load order (sorted)
  struct Stamp {
    std::string path;
    std::int64_t mtime_ns = 0, ctime_ns = 0, size = 0;
    std::uint64_t inode = 0;
    bool operator==(const Stamp&) const = default;
  };

  // build() compiles `files` into a snapshot, filling each file's domains; nullptr on errors.
  std::shared_ptr<const RuleSet> build(Files& files, std::vector<ConfigError>& errors) const;
  // read_disk() reads every rule file of paths_; false on errors.
  bool read_disk(Files& files, std::vector<ConfigError>& errors) const;
  std::vector<Stamp> stamps() const;
  void publish(Files files, std::shared_ptr<const RuleSet> rules);  // mu_ held
  // file_of() returns the path of the file `name` refers to ("" if none). mu_ held.
  std::string file_of(std::string_view name) const;
  // refuse_change() fills `out` and returns true when `name` cannot be changed at all.
  bool refuse_change(std::string_view name, RulesChange& out) const;
  bool persist(const std::string& path, std::string_view text, std::string& error) const;
  void run_watcher(std::chrono::milliseconds interval);

  const std::vector<std::string> paths_;
  std::string directory_;  // the one writable directory, or ""
  Listener on_change_;
  Metrics* metrics_;

  mutable std::mutex mu_;
  Files files_;
  std::shared_ptr<const RuleSet> rules_;
  std::uint64_t generation_ = 0;
  std::vector<Stamp> stamps_;

  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool stopping_ = false;
  std::thread watcher_;
};

}  // namespace sluice::server
