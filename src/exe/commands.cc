#include "exe/commands.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sluice/clock.h"
#include "sluice/config.h"
#include "sluice/decision.h"
#include "sluice/json.h"
#include "sluice/limiter.h"
#include "sluice/memory_store.h"
#include "sluice/request.h"
#include "sluice/rules.h"
#include "sluice/storage.h"

namespace sluice::cli {

namespace {

constexpr Micros kMilli = 1'000;
constexpr Micros kSecond = 1'000'000;

// --- rules ------------------------------------------------------------------------------------

std::string error_text(const ConfigError& e) {
  if (e.where.file.empty()) return e.message;
  if (e.where.line <= 0) return e.where.file + ": " + e.message;
  return e.to_string();
}

// load() loads `paths` as one snapshot; on failure prints every error to stderr and returns null.
std::shared_ptr<const RuleSet> load(const std::vector<std::string>& paths) {
  std::vector<ConfigError> errors;
  std::shared_ptr<const RuleSet> rules;
  try {
    rules = compile_rules(paths, errors);
  } catch (const std::exception& e) {  // compile_rules reports errors; this is a safety net
    errors.push_back(ConfigError{{}, std::string("cannot load rules: ") + e.what()});
    rules = nullptr;
  }
  if (rules != nullptr && errors.empty()) return rules;
  for (const ConfigError& e : errors)
    std::cerr << error_text(e) << "\n";
  if (errors.empty()) std::cerr << "sluice: no rules could be loaded\n";
  return nullptr;
}

constexpr const char* kStorageHelp =
    "Where limits keep their state: memory:// (this process), redis://[user:pass@]host:port/db, "
    "redis+unix:///path/to/socket (docs/storage.md)";

// open_storage() opens the --storage URL, or says why it cannot.
std::unique_ptr<Store> open_storage(const std::string& url, const char* command) {
  std::string error;
  std::unique_ptr<Store> store = open_store(url, error);
  if (store == nullptr) std::cerr << "sluice " << command << ": " << error << "\n";
  return store;
}

// --- formatting -------------------------------------------------------------------------------

// ms() renders a duration as whole milliseconds, rounded up, as the JSON does.
std::string ms(Micros us) {
  if (us == kNever) return "never";
  if (us <= 0) return "0ms";
  return std::to_string(us / kMilli + (us % kMilli != 0 ? 1 : 0)) + "ms";
}

// duration() renders a window compactly: 30s, 5m, 2h, 1d, 1500ms.
std::string duration(Micros us) {
  const std::pair<Micros, const char*> units[] = {{86'400 * kSecond, "d"},
                                                  {3'600 * kSecond, "h"},
                                                  {60 * kSecond, "m"},
                                                  {kSecond, "s"},
                                                  {kMilli, "ms"}};
  for (const auto& [size, suffix] : units) {
    if (us >= size && us % size == 0) return std::to_string(us / size) + suffix;
  }
  return std::to_string(us) + "us";
}

std::string window_text(Micros window, Unit unit) {
  if (unit != Unit::kUnknown && unit_micros(unit) == window) return unit_name(unit);
  return duration(window);
}

// seconds() renders Micros since the epoch as seconds with six decimals.
std::string seconds(Micros t) {
  char buf[48];
  const char* sign = t < 0 ? "-" : "";
  const auto abs = t < 0 ? -static_cast<std::uint64_t>(t) : static_cast<std::uint64_t>(t);
  std::snprintf(buf, sizeof buf, "%s%llu.%06llu", sign,
                static_cast<unsigned long long>(abs / 1'000'000),
                static_cast<unsigned long long>(abs % 1'000'000));
  return buf;
}

// limit_text() describes a status's limit: "fixed_window 10/second", "token_bucket 5/30s burst
// 20".
std::string limit_text(const DescriptorStatus& st) {
  const LimitSpec& spec = st.spec;
  std::string out(algorithm_name(spec.algorithm));
  out += " " + std::to_string(spec.limit) + "/" + window_text(spec.window, st.unit);
  if (spec.algorithm == Algorithm::kTokenBucket && spec.burst != 0 && spec.burst != spec.limit) {
    out += " burst " + std::to_string(spec.burst);
  }
  return out;
}

// decision_text() renders a decision for a person, on one line:
//   allowed  limit=10 remaining=9 reset_after=1000ms  [api.remote_address: fixed_window
//   10/second remaining 9]
std::string decision_text(const Decision& d) {
  std::string out = d.allowed ? "allowed " : "DENIED  ";
  out += " limit=" + std::to_string(d.limit) + " remaining=" + std::to_string(d.remaining) +
         " reset_after=" + ms(d.reset_after);
  if (!d.allowed) out += " retry_after=" + ms(d.retry_after);
  out += "  [";
  if (d.statuses.empty()) out += "no limit applies";
  for (std::size_t i = 0; i < d.statuses.size(); ++i) {
    const DescriptorStatus& st = d.statuses[i];
    if (i != 0) out += "; ";
    out += st.name + ": ";
    if (st.unlimited) {
      out += "unlimited";
    } else {
      out += limit_text(st) + " remaining " + std::to_string(st.remaining);
      if (!st.allowed) out += st.shadow ? ", denied (shadow: not enforced)" : ", denied";
    }
    if (st.shadow && st.allowed) out += " (shadow)";
  }
  out += "]";
  if (!d.error.empty()) out += "  error: " + d.error;
  return out;
}

std::string render(const Decision& d, const AnyRequest& request, bool json,
                   const std::string& prefix) {
  if (json) return dump_json(decision_to_json(d, request));
  return prefix + " " + decision_text(d);
}

// --- argument parsing -------------------------------------------------------------------------

// parse_pairs() reads "k=v,k2=v2" ("k" alone means an empty value) into `out`.
bool parse_pairs(const std::string& text, const std::string& flag,
                 std::vector<std::pair<std::string, std::string>>& out) {
  if (text.empty()) {
    std::cerr << "sluice: " << flag << ": expected key=value[,key=value...], got an empty value\n";
    return false;
  }
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string item =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const std::size_t eq = item.find('=');
    std::string key = item.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (key.empty()) {
      std::cerr << "sluice: " << flag << " '" << text << "': every entry needs a key (key=value)\n";
      return false;
    }
    out.emplace_back(std::move(key), std::move(value));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return true;
}

// --- validate ---------------------------------------------------------------------------------

int run_validate(const std::vector<std::string>& paths) {
  std::shared_ptr<const RuleSet> rules = load(paths);
  if (rules == nullptr) return 1;
  const RuleSource& src = rules->source();
  std::cout << "ok: " << src.domains.size()
            << (src.domains.size() == 1 ? " domain, " : " domains, ") << src.path_rules.size()
            << (src.path_rules.size() == 1 ? " path rule, " : " path rules, ")
            << rules->limit_count() << (rules->limit_count() == 1 ? " limit" : " limits") << "\n";
  return 0;
}

// --- check ------------------------------------------------------------------------------------

struct CheckOptions {
  std::string storage = "memory://";
  std::vector<std::string> configs;
  std::string domain;
  std::vector<std::string> descriptors;
  std::string path;
  std::vector<std::string> data;
  std::int64_t cost = 1;
  std::int64_t times = 1;
  bool json = false;
};

int run_check(const CheckOptions& o) {
  const bool envoy = !o.domain.empty() || !o.descriptors.empty();
  const bool path = !o.path.empty() || !o.data.empty();
  if (envoy && path) {
    std::cerr << "sluice check: give either --domain and --descriptor, or --path and --data\n";
    return 1;
  }
  if (!envoy && !path) {
    std::cerr << "sluice check: say what to check: --domain D --descriptor k=v, or --path P "
                 "--data k=v\n";
    return 1;
  }
  if (o.cost < 0 || static_cast<std::uint64_t>(o.cost) > kMaxLimit) {
    std::cerr << "sluice check: --cost must be between 0 and " << kMaxLimit << "\n";
    return 1;
  }
  if (o.times < 1 || o.times > 1'000'000) {
    std::cerr << "sluice check: --times must be between 1 and 1000000\n";
    return 1;
  }
  const auto cost = static_cast<std::uint64_t>(o.cost);

  AnyRequest request;
  if (envoy) {
    if (o.domain.empty()) {
      std::cerr << "sluice check: --domain is required with --descriptor\n";
      return 1;
    }
    if (o.descriptors.empty()) {
      std::cerr << "sluice check: give at least one --descriptor k=v[,k=v...]\n";
      return 1;
    }
    Request r{.domain = o.domain, .descriptors = {}, .cost = cost};
    for (const std::string& text : o.descriptors) {
      std::vector<std::pair<std::string, std::string>> pairs;
      if (!parse_pairs(text, "--descriptor", pairs)) return 1;
      Descriptor& d = r.descriptors.emplace_back();
      for (auto& [k, v] : pairs)
        d.entries.push_back({std::move(k), std::move(v)});
    }
    request = std::move(r);
  } else {
    if (o.path.empty()) {
      std::cerr << "sluice check: --path is required with --data\n";
      return 1;
    }
    PathRequest r{.path = o.path, .data = {}, .cost = cost};
    for (const std::string& text : o.data) {
      if (!parse_pairs(text, "--data", r.data)) return 1;
    }
    request = std::move(r);
  }

  std::shared_ptr<const RuleSet> rules = load(o.configs);
  if (rules == nullptr) return 1;
  if (const auto* r = std::get_if<Request>(&request); r != nullptr && !rules->has_domain(r->domain))
    std::cerr << "sluice check: note: no rules for domain '" << r->domain << "'\n";
  std::unique_ptr<Store> store = open_storage(o.storage, "check");
  if (store == nullptr) return 1;
  Limiter limiter(rules, *store, SystemClock::instance());
  for (std::int64_t i = 1; i <= o.times; ++i) {
    const Decision d = std::visit([&limiter](const auto& r) { return limiter.decide(r); }, request);
    std::cout << render(d, request, o.json, "#" + std::to_string(i)) << "\n";
  }
  return 0;
}

// --- replay -----------------------------------------------------------------------------------

struct ReplayOptions {
  std::vector<std::string> configs;
  std::string storage = "memory://";
  std::string trace;
  bool json = false;
};

// RuleTally counts one limit's outcomes over a replay.
struct RuleTally {
  std::string name;
  bool shadow = false;
  std::uint64_t hits = 0;
  std::uint64_t allowed = 0;
  std::uint64_t denied = 0;
  std::uint64_t shadow_denied = 0;
};

int run_replay(const ReplayOptions& o) {
  std::ifstream in(o.trace, std::ios::binary);
  if (!in) {
    std::cerr << "sluice replay: cannot open trace '" << o.trace << "': " << std::strerror(errno)
              << "\n";
    return 1;
  }
  // Read and check the whole trace first: a trace with a bad line replays nothing.
  struct Line {
    std::size_t number;
    TraceLine hit;
  };
  std::vector<Line> lines;
  std::size_t bad = 0;
  std::string text;
  for (std::size_t number = 1; std::getline(in, text); ++number) {
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    std::string error;
    std::optional<TraceLine> hit = parse_trace_line(text, error);
    if (!hit) {
      if (++bad <= 20) std::cerr << o.trace << ":" << number << ": " << error << "\n";
      continue;
    }
    lines.push_back({number, std::move(*hit)});
  }
  if (in.bad()) {
    std::cerr << "sluice replay: cannot read trace '" << o.trace << "'\n";
    return 1;
  }
  if (bad != 0) {
    if (bad > 20) std::cerr << "... and " << bad - 20 << " more bad lines\n";
    std::cerr << "sluice replay: " << bad << (bad == 1 ? " bad line" : " bad lines")
              << " in the trace; nothing replayed\n";
    return 1;
  }

  std::shared_ptr<const RuleSet> rules = load(o.configs);
  if (rules == nullptr) return 1;
  std::unique_ptr<Store> store = open_storage(o.storage, "replay");
  if (store == nullptr) return 1;
  ManualClock clock(lines.empty() ? 0 : lines.front().hit.t);
  Limiter limiter(rules, *store, clock);

  std::vector<RuleTally> tallies;
  std::unordered_map<std::string, std::size_t> tally_of;
  std::uint64_t allowed = 0;
  for (const Line& line : lines) {
    clock.set(line.hit.t);
    const Decision d =
        std::visit([&limiter](const auto& r) { return limiter.decide(r); }, line.hit.request);
    allowed += d.allowed ? 1 : 0;
    std::cout << render(d, line.hit.request, o.json,
                        "line " + std::to_string(line.number) + " t=" + seconds(line.hit.t))
              << "\n";
    for (const DescriptorStatus& st : d.statuses) {
      auto [it, added] = tally_of.emplace(st.name, tallies.size());
      if (added) tallies.push_back(RuleTally{.name = st.name});
      RuleTally& t = tallies[it->second];
      t.shadow |= st.shadow;
      ++t.hits;
      if (st.allowed) {
        ++t.allowed;
      } else if (st.shadow) {
        ++t.shadow_denied;
      } else {
        ++t.denied;
      }
    }
  }

  if (o.json) {
    nlohmann::ordered_json summary = nlohmann::ordered_json::array();
    for (const RuleTally& t : tallies) {
      nlohmann::ordered_json j;
      j["name"] = t.name;
      j["hits"] = t.hits;
      j["allowed"] = t.allowed;
      j["denied"] = t.denied;
      if (t.shadow) j["shadow_denied"] = t.shadow_denied;
      summary.push_back(std::move(j));
    }
    nlohmann::ordered_json out;
    out["summary"] = std::move(summary);
    std::cout << out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
    return 0;
  }
  std::cout << "\n"
            << lines.size() << (lines.size() == 1 ? " request: " : " requests: ") << allowed
            << " allowed, " << lines.size() - allowed << " denied\n";
  if (tallies.empty()) return 0;
  std::size_t width = 4;
  for (const RuleTally& t : tallies)
    width = std::max(width, t.name.size());
  char row[64];
  std::cout << "rule" << std::string(width - 4, ' ')
            << "      hits   allowed    denied  shadow-denied\n";
  for (const RuleTally& t : tallies) {
    std::snprintf(row, sizeof row, "%10llu%10llu%10llu", static_cast<unsigned long long>(t.hits),
                  static_cast<unsigned long long>(t.allowed),
                  static_cast<unsigned long long>(t.denied));
    std::cout << t.name << std::string(width - t.name.size(), ' ') << row;
    if (t.shadow) {
      std::snprintf(row, sizeof row, "%15llu", static_cast<unsigned long long>(t.shadow_denied));
      std::cout << row;
    }
    std::cout << "\n";
  }
  return 0;
}

// --- demo -------------------------------------------------------------------------------------

// DemoHit is one row of the demo: `count` hits at `at` windows after the start.
struct DemoBurst {
  double at;  // in windows
  int count;
};
constexpr DemoBurst kDemoSchedule[] = {{0.0, 2}, {0.5, 5}, {1.0, 2}, {1.2, 2}};

// demo_reason() explains one verdict in words. `counts` holds the hits each window admitted so
// far (this one included when allowed); the sliding window counter's estimate needs them.
std::string demo_reason(const DescriptorStatus& st, Micros offset, Micros window,
                        const std::map<std::int64_t, std::uint64_t>& counts) {
  const std::uint64_t n = st.limit;
  const std::uint64_t used = n - std::min(n, st.remaining);
  const std::string retry = ", retry in " + ms(st.retry_after);
  const std::int64_t k = offset / window;
  const auto count = [&counts](std::int64_t w) {
    const auto it = counts.find(w);
    return it == counts.end() ? std::uint64_t{0} : it->second;
  };
  char buf[160];
  switch (st.spec.algorithm) {
    case Algorithm::kFixedWindow:
      if (st.allowed) {
        return "window " + std::to_string(k) + ": " + std::to_string(used) + "/" +
               std::to_string(n) + " used";
      }
      return "window " + std::to_string(k) + " full: " + std::to_string(used) + "/" +
             std::to_string(n) + " used" + retry;
    case Algorithm::kSlidingWindowLog:
      return std::to_string(used) + "/" + std::to_string(n) + " used in the last " +
             duration(window) + (st.allowed ? "" : retry);
    case Algorithm::kSlidingWindowCounter: {
      const double weight =
          1.0 - static_cast<double>(offset - k * window) / static_cast<double>(window);
      const std::uint64_t prev = count(k - 1);
      const std::uint64_t cur = count(k);  // admitted in this window, this hit included if allowed
      if (prev == 0) {
        std::snprintf(buf, sizeof buf, "window %lld%s: %llu/%llu used", static_cast<long long>(k),
                      st.allowed ? "" : " full", static_cast<unsigned long long>(cur),
                      static_cast<unsigned long long>(n));
        return std::string(buf) + (st.allowed ? "" : retry);
      }
      const std::uint64_t with_hit = cur + (st.allowed ? 0 : 1);
      const double estimate = static_cast<double>(prev) * weight + static_cast<double>(with_hit);
      std::snprintf(buf, sizeof buf, "%.0f%% of window %lld's %llu + %llu = %.1f %s %llu",
                    weight * 100, static_cast<long long>(k - 1),
                    static_cast<unsigned long long>(prev),
                    static_cast<unsigned long long>(with_hit), estimate, st.allowed ? "<=" : ">",
                    static_cast<unsigned long long>(n));
      return std::string(buf) + (st.allowed ? "" : retry);
    }
    case Algorithm::kTokenBucket:
      if (st.allowed) {
        return "took a token, " + std::to_string(st.remaining) +
               (st.remaining == 1 ? " whole token left" : " whole tokens left");
      }
      return "less than a token left, retry in " + ms(st.retry_after);
  }
  return "";
}

int run_demo(const std::vector<std::string>& configs) {
  std::shared_ptr<const RuleSet> rules = load(configs);
  if (rules == nullptr) return 1;
  const std::string domain = "demo";
  if (!rules->has_domain(domain)) {
    std::cerr << "sluice demo: the rules have no domain '" << domain
              << "' (see examples/demo.yaml)\n";
    return 1;
  }
  int hits_per_run = 0;
  for (const DemoBurst& b : kDemoSchedule)
    hits_per_run += b.count;

  std::cout << "sluice demo: the same " << hits_per_run
            << " hits on one key under each algorithm (domain \"demo\" of the rules)\n"
            << "'left' is what remains after the hit; times are from the first hit.\n";
  for (const Algorithm algorithm : {Algorithm::kFixedWindow, Algorithm::kSlidingWindowLog,
                                    Algorithm::kSlidingWindowCounter, Algorithm::kTokenBucket}) {
    const std::string name(algorithm_name(algorithm));
    const Request request{
        .domain = domain, .descriptors = {{.entries = {{"algorithm", name}}}}, .cost = 1};
    MemoryStore store;
    ManualClock clock(seconds_to_micros(1'700'000'000));
    Limiter limiter(rules, store, clock);
    // A cost-0 probe reads the limit without consuming, to align the start to its window.
    const Request probe{.domain = domain, .descriptors = request.descriptors, .cost = 0};
    const Decision first = limiter.decide(probe);
    if (first.statuses.empty() || first.statuses[0].unlimited) {
      std::cout << "\n" << name << ": no limit for algorithm=" << name << " in domain demo\n";
      continue;
    }
    const DescriptorStatus& rule = first.statuses[0];
    const Micros window = rule.spec.window;
    const Micros start = clock.now_micros() - clock.now_micros() % window;

    std::vector<std::string> rows;
    std::map<std::int64_t, std::uint64_t> counts;  // window index -> admitted hits
    int hit = 0, admitted = 0;
    for (const DemoBurst& b : kDemoSchedule) {
      const auto offset = static_cast<Micros>(b.at * static_cast<double>(window));
      clock.set(start + offset);
      for (int i = 0; i < b.count; ++i) {
        const Decision d = limiter.decide(request);
        ++hit;
        if (d.statuses.empty()) continue;
        const DescriptorStatus& st = d.statuses[0];
        if (st.allowed) {
          ++admitted;
          ++counts[offset / window];
        }
        char row[64];
        std::snprintf(row, sizeof row, "  %7.3fs %4d  %-8s %4llu  ",
                      static_cast<double>(offset) / static_cast<double>(kSecond), hit,
                      st.allowed ? "allowed" : "LIMITED",
                      static_cast<unsigned long long>(st.remaining));
        rows.push_back(row + demo_reason(st, offset, window, counts));
      }
    }
    std::cout << "\n"
              << limit_text(rule) << ": " << admitted << " of " << hit << " allowed\n"
              << "      time  hit  result   left  why\n";
    for (const std::string& row : rows)
      std::cout << row << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sluice — a rate limiter: serve, check rule files, decide requests, replay traces"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("sluice ") + SLUICE_VERSION);

  CLI::App* version = app.add_subcommand("version", "Print sluice's version");

  std::vector<std::string> validate_paths;
  CLI::App* validate = app.add_subcommand(
      "validate", "Load rule files as one snapshot and report every error as file:line:column");
  validate
      ->add_option("paths", validate_paths,
                   "Rule files or directories (every *.yaml, *.yml, *.json in them)")
      ->required();

  CheckOptions check_options;
  CLI::App* check = app.add_subcommand(
      "check", "Decide a request now, with an in-memory store and the system clock");
  check
      ->add_option("-c,--config", check_options.configs,
                   "Rule file or directory (repeatable; all load as one snapshot)")
      ->required()
      ->allow_extra_args(false);
  check->add_option("-d,--domain", check_options.domain, "Envoy domain of the request");
  check
      ->add_option("--descriptor", check_options.descriptors,
                   "One descriptor: key=value[,key=value...]; a key alone has an empty value "
                   "(repeatable: one descriptor per flag)")
      ->allow_extra_args(false);
  check->add_option("-p,--path", check_options.path,
                    "Path of a path-rule request (instead of --domain)");
  check
      ->add_option("--data", check_options.data,
                   "Data of a path-rule request: key=value[,key=value...] (repeatable)")
      ->allow_extra_args(false);
  check->add_option("-s,--storage", check_options.storage, kStorageHelp)
      ->envname("SLUICE_STORAGE")
      ->capture_default_str();
  check->add_option("--cost", check_options.cost,
                    "Cost units of each hit (default 1; 0 checks without consuming)");
  check->add_option("-n,--times", check_options.times,
                    "Decide the request this many times (default 1)");
  check->add_flag("--json", check_options.json, "Print each decision as one JSON line");

  ReplayOptions replay_options;
  CLI::App* replay = app.add_subcommand(
      "replay",
      "Decide every line of a trace on a manual clock set to each line's \"t\", then summarise per "
      "limit. A trace with a bad line replays nothing (exit 1, every bad line named)");
  replay
      ->add_option("-c,--config", replay_options.configs,
                   "Rule file or directory (repeatable; all load as one snapshot)")
      ->required()
      ->allow_extra_args(false);
  replay->add_option("-s,--storage", replay_options.storage, kStorageHelp)
      ->envname("SLUICE_STORAGE")
      ->capture_default_str();
  replay
      ->add_option("-t,--trace", replay_options.trace,
                   "JSON lines: {\"t\": seconds since the epoch, \"domain\", \"descriptors\": "
                   "[{\"entries\": [{\"key\", \"value\"}]}], \"cost\"?} or {\"t\", \"path\", "
                   "\"data\": {...}, \"cost\"?}; blank lines are skipped")
      ->required();
  replay->add_flag("--json", replay_options.json,
                   "Print each decision as one JSON line, then {\"summary\": [...]}");

  std::vector<std::string> demo_configs{"examples"};
  CLI::App* demo = app.add_subcommand(
      "demo", "Show how the four algorithms treat the same hits (domain \"demo\" of the rules)");
  demo->add_option("-c,--config", demo_configs,
                   "Rule file or directory with the demo domain (default: examples)")
      ->allow_extra_args(false);

  ServeCommand serve;
  add_serve_command(app, serve);

  // CLI11 would say "A subcommand is required" for a misspelt command; name it instead.
  if (argc >= 2 && argv[1][0] != '-') {
    const std::string_view command = argv[1];
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({}))
      known |= sub->get_name() == command;
    if (!known) {
      std::cerr << "sluice: unknown command '" << command
                << "' (commands: serve, validate, check, replay, demo, version)\n"
                << "Run with --help for more information.\n";
      return 2;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  try {
    if (*version) {
      std::cout << "sluice " << SLUICE_VERSION << "\n";
      return 0;
    }
    if (*validate) return run_validate(validate_paths);
    if (*check) return run_check(check_options);
    if (*replay) return run_replay(replay_options);
    if (*demo) return run_demo(demo_configs);
    if (*serve.app) return run_serve(serve);
  } catch (const std::exception& e) {
    std::cerr << "sluice: " << e.what() << "\n";
    return 1;
  }
  return 2;
}

}  // namespace sluice::cli
