#include "server/rules_manager.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "server/embedded_rules.h"
#include "server/metrics.h"

namespace sluice::server {

namespace fs = std::filesystem;

namespace {

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

// write_all() writes the whole of `text` to `fd`.
bool write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

RulesManager::RulesManager(std::vector<std::string> paths, Listener on_change, Metrics* metrics)
    : paths_(std::move(paths)), on_change_(std::move(on_change)), metrics_(metrics) {
  if (paths_.size() == 1) {
    std::error_code ec;
    if (fs::is_directory(paths_[0], ec)) directory_ = paths_[0];
    while (directory_.size() > 1 && directory_.back() == '/')
      directory_.pop_back();
  }
}

RulesManager::~RulesManager() {
  stop();
}

bool RulesManager::valid_name(std::string_view name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

bool RulesManager::read_disk(Files& files, std::vector<ConfigError>& errors) const {
  if (paths_.empty()) {
    for (const EmbeddedRuleFile& f : embedded_rules())
      files[f.name].text = f.text;
    return true;
  }
  for (const std::string& path : rule_files(paths_, errors)) {
    std::string message;
    std::optional<std::string> text = read_rule_file(path, message);
    if (!text) {
      errors.push_back({{path, 0, 0}, std::move(message)});
      continue;
    }
    files[path].text = std::move(*text);
  }
  return errors.empty();
}

std::shared_ptr<const RuleSet> RulesManager::build(Files& files,
                                                   std::vector<ConfigError>& errors) const {
  RuleSource source;
  for (auto& [path, file] : files) {
    RuleSource one;
    for (auto& e : parse_rules(file.text, path, one))
      errors.push_back(std::move(e));
    file.domains.clear();
    for (DomainRules& d : one.domains) {
      file.domains.push_back(d.domain);
      source.domains.push_back(std::move(d));
    }
    file.path_rules = one.path_rules.size();
    for (PathRule& r : one.path_rules)
      source.path_rules.push_back(std::move(r));
  }
  for (auto& e : check_rules(source))
    errors.push_back(std::move(e));
  if (!errors.empty()) return nullptr;
  try {
    return RuleSet::compile(std::move(source));
  } catch (const std::exception& e) {  // check_rules() refuses what compile() throws on
    errors.push_back({{}, std::string("cannot compile rules: ") + e.what()});
    return nullptr;
  }
}

std::vector<RulesManager::Stamp> RulesManager::stamps() const {
  std::vector<Stamp> out;
  if (paths_.empty()) return out;
  std::vector<ConfigError> errors;
  for (const std::string& path : rule_files(paths_, errors)) {
    Stamp& s = out.emplace_back();
    s.path = path;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      s.size = -1;
      continue;
    }
    s.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    s.ctime_ns = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
    s.size = static_cast<std::int64_t>(st.st_size);
    s.inode = static_cast<std::uint64_t>(st.st_ino);
  }
  // A path that cannot be listed is a state of its own, so that its return is noticed.
  for (const ConfigError& e : errors)
    out.push_back(Stamp{.path = "!" + e.to_string()});
  return out;
}

void RulesManager::publish(Files files, std::shared_ptr<const RuleSet> rules) {
  std::size_t domains = 0, path_rules = 0;
  for (const auto& [path, file] : files) {
    domains += file.domains.size();
    path_rules += file.path_rules;
  }
  files_ = std::move(files);
  rules_ = std::move(rules);
  ++generation_;
  if (on_change_) on_change_(rules_);
  if (metrics_ != nullptr) metrics_->set_rules(domains, path_rules, rules_->limit_count());
}

bool RulesManager::load(std::vector<ConfigError>& errors) {
  std::vector<Stamp> now = stamps();
  std::lock_guard<std::mutex> lock(mu_);
  Files files;
  std::shared_ptr<const RuleSet> rules;
  if (read_disk(files, errors)) rules = build(files, errors);
  if (rules == nullptr) return false;
  stamps_ = std::move(now);
  publish(std::move(files), std::move(rules));
  std::string from = paths_.empty() ? std::string("the embedded examples") : std::string();
  for (const std::string& p : paths_)
    from += (from.empty() ? "" : ", ") + p;
  spdlog::info("rules loaded from {}: {} files, {} limits (generation {})", from, files_.size(),
               rules_->limit_count(), generation_);
  return true;
}

bool RulesManager::check_files() {
  std::vector<Stamp> now = stamps();
  std::lock_guard<std::mutex> lock(mu_);
  if (now == stamps_) return false;
  stamps_ = std::move(now);
  Files files;
  std::vector<ConfigError> errors;
  std::shared_ptr<const RuleSet> rules;
  if (read_disk(files, errors)) {
    const bool same =
        files.size() == files_.size() &&
        std::equal(files.begin(), files.end(), files_.begin(), [](const auto& a, const auto& b) {
          return a.first == b.first && a.second.text == b.second.text;
        });
    if (same) {  // touched, or our own API write: nothing to do
      return false;
    }
    rules = build(files, errors);
  }
  if (rules == nullptr) {
    if (metrics_ != nullptr) metrics_->record_reload(false);
    spdlog::error("rules not reloaded: {} error{}; generation {} keeps serving", errors.size(),
                  errors.size() == 1 ? "" : "s", generation_);
    for (const ConfigError& e : errors)
      spdlog::error("  {}", e.to_string());
    return false;
  }
  publish(std::move(files), std::move(rules));
  if (metrics_ != nullptr) metrics_->record_reload(true);
  spdlog::info("rules reloaded from files: {} files, {} limits (generation {})", files_.size(),
               rules_->limit_count(), generation_);
  return true;
}

void RulesManager::watch(std::chrono::milliseconds interval) {
  if (paths_.empty() || watcher_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    stopping_ = false;
  }
  watcher_ = std::thread([this, interval] { run_watcher(interval); });
}

void RulesManager::run_watcher(std::chrono::milliseconds interval) {
  std::unique_lock<std::mutex> lock(watch_mu_);
  while (!watch_cv_.wait_for(lock, interval, [this] { return stopping_; })) {
    lock.unlock();
    try {
      check_files();
    } catch (const std::exception& e) {  // never let the watcher die: log and keep watching
      spdlog::error("rules watcher: {}", e.what());
    }
    lock.lock();
  }
}

void RulesManager::stop() {
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    stopping_ = true;
  }
  watch_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

std::string RulesManager::file_of(std::string_view name) const {
  for (const auto& [path, file] : files_)
    if (std::find(file.domains.begin(), file.domains.end(), name) != file.domains.end())
      return path;
  for (const auto& [path, file] : files_)
    if (file.domains.empty() && fs::path(path).stem() == name) return path;
  return "";
}

bool RulesManager::persist(const std::string& path, std::string_view text,
                           std::string& error) const {
  static std::atomic<std::uint64_t> counter{0};
  const fs::path target(path);
  const std::string dir = target.parent_path().string();
  const std::string tmp = dir + "/." + target.filename().string() + ".tmp-" +
                          std::to_string(::getpid()) + "-" + std::to_string(++counter);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = errno_text(("cannot create " + tmp).c_str());
    return false;
  }
  bool ok = write_all(fd, text);
  if (!ok) error = errno_text(("cannot write " + tmp).c_str());
  if (ok && ::fsync(fd) != 0) {
    error = errno_text(("cannot fsync " + tmp).c_str());
    ok = false;
  }
  ::close(fd);
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    error = errno_text(("cannot rename " + tmp + " to " + path).c_str());
    ok = false;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    return false;
  }
  if (!fsync_directory(dir)) {
    error = errno_text(("cannot fsync directory " + dir).c_str());
    return false;  // renamed, but not known to be durable: reported, and served as on disk
  }
  return true;
}

bool RulesManager::refuse_change(std::string_view name, RulesChange& out) const {
  if (!valid_name(name)) {
    out.status = 400;
    out.message = "invalid rule file name: use 1-128 of A-Z a-z 0-9 _ - . (not starting with .)";
    return true;
  }
  if (!writable()) {
    out.status = 409;
    out.message =
        "rules cannot be changed through the API: they do not come from one directory (start "
        "sluice with --config DIR)";
    return true;
  }
  return false;
}

RulesChange RulesManager::put(std::string_view name, std::string_view text) {
  RulesChange out;
  if (refuse_change(name, out)) return out;
  std::lock_guard<std::mutex> lock(mu_);
  std::string target = file_of(name);
  const bool created = target.empty();
  if (created) target = directory_ + "/" + std::string(name) + ".yaml";
  out.file = target;
  // A new name whose file exists: NAME.yaml holds domains of other names. Writing it would drop
  // them under a name that does not refer to them.
  if (const auto it = files_.find(target); created && it != files_.end()) {
    const std::vector<std::string>& domains = it->second.domains;
    out.status = 409;
    out.message = "the file " + target + " holds other rules" +
                  (domains.empty() ? std::string() : " (domain \"" + domains.front() + "\")") +
                  ": change it through their name";
    return out;
  }
  // A file of path rules only is named by its stem (file_of): a body of path rules only, for a
  // domain's file named otherwise, would leave the name referring to nothing.
  const bool named_by_stem = fs::path(target).stem() == name;

  // The body alone first: it must be the rule file that `name` names.
  RuleSource body;
  std::vector<ConfigError> errors = parse_rules(text, target, body);
  if (errors.empty()) {
    if (body.domains.size() == 1 && body.domains[0].domain != name) {
      errors.push_back(
          {body.domains[0].where, "the body defines domain \"" + body.domains[0].domain +
                                      "\", but the URL names \"" + std::string(name) + "\""});
    } else if (body.domains.empty() && body.path_rules.empty()) {
      errors.push_back({{target, 0, 0}, "the body defines no rules"});
    } else if (body.domains.empty() && !named_by_stem) {
      errors.push_back({{target, 0, 0},
                        "the URL names domain \"" + std::string(name) +
                            "\", but the body defines path rules only"});
    }
  }
  Files files = files_;
  files[target] = File{std::string(text), {}, 0};
  std::shared_ptr<const RuleSet> rules;
  if (errors.empty()) rules = build(files, errors);
  if (rules == nullptr) {
    out.status = 400;
    out.message = "invalid rules: nothing changed";
    for (const ConfigError& e : errors)
      out.errors.push_back(e.to_string());
    if (metrics_ != nullptr) metrics_->record_reload(false);
    spdlog::warn("rules change through the API refused ({}): {} error{}", name, errors.size(),
                 errors.size() == 1 ? "" : "s");
    return out;
  }
  std::string error;
  if (!persist(target, text, error)) {
    out.status = 500;
    out.message = "cannot persist the change: " + error;
    spdlog::error("rules change through the API ({}) not made: {}", name, error);
    return out;
  }
  publish(std::move(files), std::move(rules));
  if (metrics_ != nullptr) metrics_->record_reload(true);
  out.status = created ? 201 : 200;
  out.generation = generation_;
  out.message = created ? "created" : "replaced";
  spdlog::info("rules {} through the API: {} ({} limits, generation {})", out.message, target,
               rules_->limit_count(), generation_);
  return out;
}

RulesChange RulesManager::remove(std::string_view name) {
  RulesChange out;
  if (refuse_change(name, out)) return out;
  std::lock_guard<std::mutex> lock(mu_);
  const std::string target = file_of(name);
  if (target.empty()) {
    out.status = 404;
    out.message = "no rule file named \"" + std::string(name) + "\"";
    return out;
  }
  out.file = target;
  Files files = files_;
  files.erase(target);
  std::vector<ConfigError> errors;
  std::shared_ptr<const RuleSet> rules = build(files, errors);
  if (rules == nullptr) {  // cannot happen: fewer files never add an error; refused anyway
    out.status = 500;
    out.message = "the remaining rules do not load";
    for (const ConfigError& e : errors)
      out.errors.push_back(e.to_string());
    return out;
  }
  if (::unlink(target.c_str()) != 0) {
    out.status = 500;
    out.message = errno_text(("cannot remove " + target).c_str());
    return out;
  }
  fsync_directory(fs::path(target).parent_path().string());
  publish(std::move(files), std::move(rules));
  if (metrics_ != nullptr) metrics_->record_reload(true);
  out.generation = generation_;
  out.message = "removed";
  spdlog::info("rules removed through the API: {} (generation {})", target, generation_);
  return out;
}

std::optional<std::string> RulesManager::get(std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string path = file_of(name);
  if (path.empty()) return std::nullopt;
  return files_.at(path).text;
}

nlohmann::json RulesManager::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json files = nlohmann::json::array();
  for (const auto& [path, file] : files_) {
    nlohmann::json f;
    std::string stem = fs::path(path).stem().string();
    if (stem.starts_with("embedded:")) stem.erase(0, std::string_view("embedded:").size());
    f["name"] = file.domains.size() == 1 ? file.domains[0] : stem;
    f["file"] = path;
    f["domains"] = file.domains;
    f["path_rules"] = file.path_rules;
    files.push_back(std::move(f));
  }
  return nlohmann::json{{"generation", generation_},
                        {"writable", writable()},
                        {"directory", directory_},
                        {"limits", rules_ != nullptr ? rules_->limit_count() : 0},
                        {"files", std::move(files)}};
}

std::shared_ptr<const RuleSet> RulesManager::current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rules_;
}

std::uint64_t RulesManager::generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return generation_;
}

}  // namespace sluice::server
