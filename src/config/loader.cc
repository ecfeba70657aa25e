// loader.cc — rule files (Envoy ratelimit YAML, path rules, JSON of either) -> RuleSource.
//
// The reader walks yaml-cpp's node tree by hand rather than converting it with as<T>(), so that
// every problem is reported with the line and column of the node it is about, and so that it
// keeps going after one problem to report the next. docs/configuration.md is the user's view of
// everything accepted here, and of every message.
//
// Hostile input: yaml-cpp bounds nesting while parsing (DeepRecursion), but its node trees may
// share nodes through aliases and may even be cyclic (`a: &a {<<: *a}`). So every walk here is
// bounded: descriptor nesting by kMaxDescriptorDepth, merges by kMaxMergeDepth, and the total
// work per file by kMaxSteps (aliases can repeat a subtree exponentially often).
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "sluice/config.h"

namespace sluice {

namespace {

namespace fs = std::filesystem;

// Deeper descriptor trees are refused: nobody writes them, and RuleSet::compile recurses.
constexpr int kMaxDescriptorDepth = 64;
// `<<` merges may merge maps that merge maps; deeper chains are refused (they may be cycles).
constexpr int kMaxMergeDepth = 16;
// Map entries and list items visited per file. Bounds the time spent on alias bombs.
constexpr std::size_t kMaxSteps = 1'000'000;
// Errors reported per file before giving up on it.
constexpr std::size_t kMaxErrors = 1000;

constexpr std::string_view kUnitList = "second, minute, hour, day, week, month or year";
constexpr std::string_view kAlgorithmList =
    "fixed_window, sliding_window_log, sliding_window_counter or token_bucket";
constexpr std::string_view kDurationHelp =
    "expected a whole number and a unit, e.g. 30s, 5m, 1h30m or 250ms; units: us, ms, s, m, h, "
    "d, w";

using Keys = std::span<const std::string_view>;

constexpr std::string_view kLimitKeys[] = {
    "unit",     "requests_per_unit", "unlimited",       "name",
    "replaces", "algorithm",         "unit_multiplier", "window",
    "burst",    "failure_mode",      "consistency"};
constexpr std::string_view kEnvoyTopKeys[] = {"domain", "descriptors"};
constexpr std::string_view kPathTopKeys[] = {"rules"};
constexpr std::string_view kDescriptorKeys[] = {
    "key", "value", "rate_limit", "rate_limits", "descriptors", "shadow_mode", "detailed_metric"};
constexpr std::string_view kPathRuleKeys[] = {"path", "descriptors"};
constexpr std::string_view kPathDescriptorKeys[] = {"key",
                                                    "value",
                                                    "shadow_mode",
                                                    "limits",
                                                    "unit",
                                                    "requests_per_unit",
                                                    "unlimited",
                                                    "name",
                                                    "replaces",
                                                    "algorithm",
                                                    "unit_multiplier",
                                                    "window",
                                                    "burst",
                                                    "failure_mode",
                                                    "consistency"};
constexpr std::string_view kReplacesKeys[] = {"name"};
// Keys of newer Envoy ratelimit releases that sluice does not implement.
constexpr std::string_view kUnsupportedEnvoyKeys[] = {"share_threshold", "value_to_metric",
                                                      "quota_mode"};

bool contains(Keys keys, std::string_view key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

// --- text helpers -------------------------------------------------------------------------------

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// quote() renders user text for a message: quoted, clipped, control bytes escaped.
std::string quote(std::string_view s) {
  constexpr std::size_t kMax = 64;
  std::string out = "'";
  for (std::size_t i = 0; i < s.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMax) out += "...";
  out += "'";
  return out;
}

// edit_distance() is the optimal-string-alignment distance (a transposition costs 1), case
// insensitive. Only used on short keys; long inputs return a large distance.
std::size_t edit_distance(std::string_view a_in, std::string_view b_in) {
  if (a_in.size() > 64 || b_in.size() > 64) return 1000;
  const std::string a = lower(a_in), b = lower(b_in);
  const std::size_t n = a.size(), m = b.size();
  std::vector<std::vector<std::size_t>> d(n + 1, std::vector<std::size_t>(m + 1));
  for (std::size_t i = 0; i <= n; ++i)
    d[i][0] = i;
  for (std::size_t j = 0; j <= m; ++j)
    d[0][j] = j;
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

// closest() returns the candidate a misspelling most likely meant, if one is close enough.
std::optional<std::string_view> closest(std::string_view word, Keys candidates) {
  const std::size_t allowed = std::clamp<std::size_t>(word.size() / 3, 1, 3);
  std::optional<std::string_view> best;
  std::size_t best_distance = allowed + 1;
  for (std::string_view c : candidates) {
    const std::size_t distance = edit_distance(word, c);
    if (distance < best_distance) {
      best = c;
      best_distance = distance;
    }
  }
  return best;
}

std::string join(Keys keys) {
  std::string out;
  for (std::string_view k : keys) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out;
}

// at() renders a location for "already defined at ..." messages.
std::string at(const SourceLocation& where) {
  if (where.file.empty() && where.line <= 0) return "an earlier rule";
  if (where.line <= 0) return where.file;
  return where.file + ":" + std::to_string(where.line);
}

// composite() is Envoy's key for a descriptor at its level: "key", or "key_value".
std::string composite(std::string_view key, std::string_view value) {
  std::string out(key);
  if (!value.empty()) {
    out += '_';
    out += value;
  }
  return out;
}

// --- YAML scalars --------------------------------------------------------------------------------

bool all_of_chars(std::string_view s, std::string_view allowed) {
  return !s.empty() && s.find_first_not_of(allowed) == std::string_view::npos;
}

// plain_is_string() tells whether a plain (unquoted, untagged) scalar is a string under YAML 1.1's
// resolution, as Envoy's ratelimit (go-yaml v2) reads keys: null, booleans, integers and floats
// are not.
bool plain_is_string(std::string_view s) {
  static const std::unordered_set<std::string_view> kNotStrings = {
      "",      "~",     "null",  "Null",  "NULL",  "y",     "Y",    "yes",  "Yes",   "YES",
      "n",     "N",     "no",    "No",    "NO",    "true",  "True", "TRUE", "false", "False",
      "FALSE", "on",    "On",    "ON",    "off",   "Off",   "OFF",  ".inf", ".Inf",  ".INF",
      "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", ".nan", ".NaN", ".NAN"};
  if (kNotStrings.count(s) != 0) return false;
  std::string_view body = s;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) body.remove_prefix(1);
  if (body.empty()) return true;
  // Integers: decimal, 0b binary, 0x hex, 0-prefixed octal (underscores allowed).
  if (body.size() > 2 && body[0] == '0' && (body[1] == 'b' || body[1] == 'x')) {
    const std::string_view digits = body.substr(2);
    if (all_of_chars(digits, body[1] == 'b' ? "01_" : "0123456789abcdefABCDEF_")) return false;
  }
  if (all_of_chars(body, "0123456789_") && body[0] != '_') return false;
  // Floats: digits with one '.', optionally an exponent.
  const std::size_t e = body.find_first_of("eE");
  const std::string_view mantissa = body.substr(0, e);
  if (std::count(mantissa.begin(), mantissa.end(), '.') == 1 && mantissa.size() > 1 &&
      all_of_chars(mantissa, "0123456789_.")) {
    if (e == std::string_view::npos) return false;
    std::string_view exponent = body.substr(e + 1);
    if (!exponent.empty() && (exponent[0] == '+' || exponent[0] == '-')) exponent.remove_prefix(1);
    if (all_of_chars(exponent, "0123456789")) return false;
  }
  return true;
}

// describe() names what a node is, for "got ..." in messages.
std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return "nothing";
    case YAML::NodeType::Scalar:
      return quote(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
  }
  return "nothing";
}

// --- durations -----------------------------------------------------------------------------------

struct Duration {
  enum Status { kOk, kInvalid, kTooLong } status = kInvalid;
  Micros micros = 0;
};

// parse_duration() reads "30s", "250ms", "1h30m", ...: one or more whole numbers, each with a
// unit (us, µs, ms, s, m, h, d, w).
Duration parse_duration(std::string_view s) {
  Duration out;
  if (s.empty()) return out;
  bool too_long = false;
  Micros total = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t start = i;
    std::uint64_t value = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (value > 1'000'000'000'000'000ull) too_long = true;
      value = too_long ? value : value * 10 + static_cast<std::uint64_t>(s[i] - '0');
      ++i;
    }
    if (i == start) return out;  // a unit without a number, or junk
    const std::string_view rest = s.substr(i);
    Micros unit = 0;
    std::size_t len = 0;
    static constexpr std::pair<std::string_view, Micros> kUnits[] = {
        {"us", 1},
        {"\xc2\xb5s", 1},  // µs, MICRO SIGN
        {"\xce\xbcs", 1},  // μs, GREEK SMALL LETTER MU
        {"ms", 1'000},
        {"s", 1'000'000},
        {"m", 60'000'000},
        {"h", 3'600'000'000},
        {"d", 86'400'000'000},
        {"w", 604'800'000'000},
    };
    for (const auto& [name, micros] : kUnits) {
      if (rest.substr(0, name.size()) == name) {
        unit = micros;
        len = name.size();
        break;
      }
    }
    if (unit == 0) return out;
    i += len;
    if (too_long || value > static_cast<std::uint64_t>(kMaxWindow / unit)) {
      too_long = true;
      continue;
    }
    total += static_cast<Micros>(value) * unit;
    if (total > kMaxWindow) too_long = true;
  }
  out.status = too_long ? Duration::kTooLong : Duration::kOk;
  out.micros = total;
  return out;
}

std::optional<Unit> parse_unit(std::string_view s) {
  // Envoy's ratelimit upper-cases the unit and looks it up in the protobuf enum.
  const std::string l = lower(s);
  for (Unit u : {Unit::kSecond, Unit::kMinute, Unit::kHour, Unit::kDay, Unit::kWeek, Unit::kMonth,
                 Unit::kYear}) {
    if (l == unit_name(u)) return u;
  }
  return std::nullopt;
}

// DocumentStarts is a YAML event handler that only notes where each document starts.
class DocumentStarts final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { start = mark; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

  YAML::Mark start = YAML::Mark::null_mark();
};

// stuck_document() returns where yaml-cpp 0.7's LoadAll() would loop forever, or nullopt when it
// ends. On some invalid input (a ',' outside any flow collection) its parser reads an empty
// document without consuming anything, again and again, and LoadAll() appends each one to its
// result until memory runs out (jbeder/yaml-cpp#1040, fixed upstream in 2024 by #1319). So the
// documents are read once without building nodes, stopping at one that starts where the
// previous one did; LoadAll() then runs only on text it reads to the end. Throws what
// LoadAll() throws (YAML::ParserException, YAML::DeepRecursion).
std::optional<YAML::Mark> stuck_document(std::string_view text) {
  std::istringstream in{std::string(text)};
  YAML::Parser parser(in);
  DocumentStarts starts;
  std::optional<int> previous;
  while (parser.HandleNextDocument(starts)) {
    if (previous && *previous == starts.start.pos) return starts.start;
    previous = starts.start.pos;
  }
  return std::nullopt;
}

// --- the reader ----------------------------------------------------------------------------------

struct Abort {};  // thrown to stop reading a file (error or work budget exhausted)

// Entry is one key of a YAML map, merges (`<<`) resolved.
struct Entry {
  std::string key;
  YAML::Node key_node;
  YAML::Node value;
  bool null() const { return value.IsNull(); }
};

using Entries = std::vector<Entry>;

// find() returns the entry named `key`, or nullptr.
const Entry* find(const Entries& entries, std::string_view key) {
  for (const Entry& e : entries) {
    if (e.key == key) return &e;
  }
  return nullptr;
}

// given() returns the entry named `key` unless it is absent or null (`key:` with no value, which
// Envoy's ratelimit reads as the zero value, i.e. as not given).
const Entry* given(const Entries& entries, std::string_view key) {
  const Entry* e = find(entries, key);
  return e != nullptr && !e->null() ? e : nullptr;
}

// field() joins a context ("rate_limit", "limits[1]", "") and a key for messages.
std::string field(std::string_view context, std::string_view key) {
  if (context.empty()) return std::string(key);
  return std::string(context) + "." + std::string(key);
}

// Where a key is misplaced rather than misspelled, say where it belongs.
enum class Level {
  kEnvoyTop,
  kPathTop,
  kDescriptor,
  kLimit,
  kReplaces,
  kPathRule,
  kPathDescriptor
};

class Reader {
 public:
  explicit Reader(const std::string& file) : file_(file) {}

  std::vector<ConfigError> read(std::string_view text, RuleSource& into) {
    RuleSource local;
    try {
      read_text(text, local);
    } catch (const Abort&) {
      // errors_ says why.
    } catch (const YAML::Exception& e) {
      errors_.push_back({mark(e.mark, {file_, 1, 1}), "cannot read rules: " + e.msg});
    } catch (const std::exception& e) {
      errors_.push_back({{file_, 1, 1}, std::string("cannot read rules: ") + e.what()});
    }
    dedupe();
    if (errors_.empty()) {
      for (auto& d : local.domains)
        into.domains.push_back(std::move(d));
      for (auto& r : local.path_rules)
        into.path_rules.push_back(std::move(r));
    }
    return std::move(errors_);
  }

 private:
  // --- errors and locations ---

  SourceLocation mark(const YAML::Mark& m, const SourceLocation& fallback) const {
    if (m.is_null() || m.line < 0 || m.column < 0) return fallback;
    return {file_, m.line + 1, m.column + 1};
  }
  SourceLocation loc(const YAML::Node& node, const SourceLocation& fallback) const {
    return mark(node.Mark(), fallback);
  }
  // key_loc() and value_loc() place a message about an entry: a null value has no position of
  // its own (yaml-cpp marks the next token), so it is reported at its key.
  SourceLocation key_loc(const Entry& e) const { return loc(e.key_node, {file_, 1, 1}); }
  SourceLocation value_loc(const Entry& e) const {
    return e.null() ? key_loc(e) : loc(e.value, key_loc(e));
  }

  void error(SourceLocation where, std::string message) {
    if (errors_.size() >= kMaxErrors) {
      errors_.push_back({std::move(where), "too many errors; stopped reading this file"});
      throw Abort{};
    }
    errors_.push_back({std::move(where), std::move(message)});
  }

  void step(std::size_t n) {
    steps_ += n;
    if (steps_ > kMaxSteps) {
      errors_.push_back({{file_, 1, 1},
                         "file too large: more than " + std::to_string(kMaxSteps) +
                             " keys and list items (aliases repeating a large tree?)"});
      throw Abort{};
    }
  }

  // dedupe() drops repeated errors (a node shared through aliases is read once per use) and
  // puts the rest in file order.
  void dedupe() {
    std::stable_sort(
        errors_.begin(), errors_.end(), [](const ConfigError& a, const ConfigError& b) {
          return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
        });
    std::unordered_set<std::string> seen;
    std::vector<ConfigError> out;
    for (auto& e : errors_) {
      if (seen.insert(e.to_string()).second) out.push_back(std::move(e));
    }
    errors_ = std::move(out);
  }

  // --- maps ---

  // key_string() returns a map key as a string, or nullopt (with an error) when it is not one.
  std::optional<std::string> key_string(const YAML::Node& k, const SourceLocation& fallback) {
    const SourceLocation where = loc(k, fallback);
    if (k.IsScalar()) {
      const std::string& tag = k.Tag();
      const bool is_string = tag == "!" || tag == "tag:yaml.org,2002:str" ||
                             (tag == "?" && plain_is_string(k.Scalar()));
      if (is_string) return k.Scalar();
      error(where, "key " + quote(k.Scalar()) + " is not a string");
    } else if (k.IsSequence()) {
      error(where, "key is a list, not a string");
    } else if (k.IsMap()) {
      error(where, "key is a map, not a string");
    } else {
      error(where, "key is empty (null), not a string");
    }
    return std::nullopt;
  }

  // entries() returns the keys of a map in file order, YAML merge keys (`<<: *base`, as Envoy's
  // YAML library supports them) resolved: keys written in the map win over merged ones, and
  // earlier merged maps win over later ones. Reports duplicate and non-string keys.
  Entries entries(const YAML::Node& map, const SourceLocation& fallback, int merge_depth = 0) {
    Entries out;
    Entries merged;
    std::unordered_map<std::string, SourceLocation> seen;
    step(map.size());
    const SourceLocation map_loc = loc(map, fallback);
    auto merge = [&](const YAML::Node& source, const SourceLocation& where) {
      if (!source.IsMap()) {
        error(loc(source, where),
              "'<<' (merge key) takes a map or a list of maps, got " + describe(source));
        return;
      }
      if (merge_depth >= kMaxMergeDepth) {
        error(loc(source, where),
              "'<<' merges nested more than " + std::to_string(kMaxMergeDepth) + " deep");
        return;
      }
      for (Entry& e : entries(source, where, merge_depth + 1)) {
        if (find(merged, e.key) == nullptr) merged.push_back(std::move(e));
      }
    };
    for (auto it = map.begin(); it != map.end(); ++it) {
      const YAML::Node k = it->first;
      const YAML::Node v = it->second;
      if (k.IsScalar() && k.Tag() == "?" && k.Scalar() == "<<") {
        const SourceLocation where = loc(k, map_loc);
        if (v.IsSequence()) {
          step(v.size());
          for (const YAML::Node& source : v)
            merge(source, where);
        } else {
          merge(v, where);
        }
        continue;
      }
      std::optional<std::string> name = key_string(k, map_loc);
      if (!name) continue;
      const SourceLocation where = loc(k, map_loc);
      auto [first, inserted] = seen.emplace(*name, where);
      if (!inserted) {
        error(where, "duplicate key " + quote(*name) + " (first at line " +
                         std::to_string(first->second.line) + ")");
        continue;
      }
      out.push_back({std::move(*name), k, v});
    }
    for (Entry& e : merged) {
      if (seen.count(e.key) == 0) out.push_back(std::move(e));
    }
    return out;
  }

  // check_keys() reports keys not in `allowed`. Returns the keys it suggested as corrections, so
  // that a "missing" error for them can be left out.
  std::vector<std::string_view> check_keys(const Entries& entries, Keys allowed, Level level,
                                           std::string_view context) {
    std::vector<std::string_view> suggested;
    for (const Entry& e : entries) {
      if (contains(allowed, e.key)) continue;
      std::string message = "unknown key " + quote(e.key);
      if (!context.empty()) message = std::string(context) + ": " + message;
      if (auto near = closest(e.key, allowed)) {
        message += " (did you mean '" + std::string(*near) + "'?)";
        suggested.push_back(*near);
      } else if (contains(kUnsupportedEnvoyKeys, e.key)) {
        message += " (an option of newer Envoy ratelimit releases that sluice does not support)";
      } else if (level == Level::kDescriptor && contains(kLimitKeys, e.key)) {
        message += " (limit keys go inside 'rate_limit')";
      } else if (level == Level::kLimit && contains(kDescriptorKeys, e.key)) {
        message += " ('" + e.key + "' belongs to the descriptor, beside 'rate_limit')";
      } else if (level == Level::kEnvoyTop && contains(kDescriptorKeys, e.key)) {
        message += " ('" + e.key + "' belongs inside a descriptor, under 'descriptors')";
      } else if (level == Level::kPathTop && contains(kPathRuleKeys, e.key)) {
        message += " ('" + e.key + "' belongs inside a rule, under 'rules')";
      } else {
        message += " (expected " + join(allowed) + ")";
      }
      error(key_loc(e), std::move(message));
    }
    return suggested;
  }

  static bool was_suggested(const std::vector<std::string_view>& suggested, std::string_view k) {
    return std::find(suggested.begin(), suggested.end(), k) != suggested.end();
  }

  // --- typed values ---

  // string() reads a string field. Any scalar is taken as its text, as Envoy's ratelimit does
  // (`value: 10` is "10"); null is nullopt (not given).
  std::optional<std::string> string(const Entry& e, std::string_view name) {
    if (e.null()) return std::nullopt;
    if (e.value.IsScalar()) return e.value.Scalar();
    error(value_loc(e), std::string(name) + ": must be a string, got " + describe(e.value));
    return std::nullopt;
  }

  std::optional<bool> boolean(const Entry& e, std::string_view name) {
    if (e.null()) return std::nullopt;
    bool b = false;
    if (e.value.IsScalar() && YAML::convert<bool>::decode(e.value, b)) return b;
    error(value_loc(e), std::string(name) + ": must be true or false, got " + describe(e.value));
    return std::nullopt;
  }

  std::optional<std::uint64_t> integer(const Entry& e, std::string_view name, std::uint64_t lo,
                                       std::uint64_t hi) {
    if (e.null()) return std::nullopt;
    if (e.value.IsScalar()) {
      const std::string& text = e.value.Scalar();
      std::uint64_t v = 0;
      bool ok = !text.empty() && text.size() <= 20;
      for (char c : text) {
        if (!ok) break;
        if (c < '0' || c > '9') {
          ok = false;
        } else {
          const auto digit = static_cast<std::uint64_t>(c - '0');
          if (v > (hi - digit) / 10) ok = false;  // v * 10 + digit would exceed hi
          v = v * 10 + digit;
        }
      }
      if (ok && v >= lo && v <= hi) return v;
    }
    error(value_loc(e), std::string(name) + ": must be an integer from " + std::to_string(lo) +
                            " to " + std::to_string(hi) + ", got " + describe(e.value));
    return std::nullopt;
  }

  // --- limits ---

  // replaces() reads `replaces: [{name: ...}, ...]`.
  std::vector<std::string> replaces(const Entry& e, const std::string& context,
                                    const std::string& own_name) {
    std::vector<std::string> out;
    const std::string what = field(context, "replaces");
    if (e.null()) return out;
    if (!e.value.IsSequence()) {
      error(value_loc(e), what + ": must be a list of {name: ...} maps, got " + describe(e.value));
      return out;
    }
    step(e.value.size());
    std::size_t i = 0;
    for (const YAML::Node& item : e.value) {
      const std::string item_what = what + "[" + std::to_string(i++) + "]";
      const SourceLocation where = loc(item, value_loc(e));
      if (!item.IsMap()) {
        error(where, item_what + ": must be a map with 'name', got " + describe(item));
        continue;
      }
      const Entries es = entries(item, where);
      check_keys(es, kReplacesKeys, Level::kReplaces, item_what);
      const Entry* n = given(es, "name");
      std::optional<std::string> name = n != nullptr ? string(*n, item_what + ".name") : "";
      if (!name) continue;
      const SourceLocation name_loc = n != nullptr ? value_loc(*n) : where;
      if (name->empty()) {
        error(name_loc, item_what + ".name: must not be empty");
      } else if (*name == own_name) {
        error(name_loc, item_what + ".name: " + quote(*name) +
                            " is this limit's own name; a limit cannot replace itself");
      } else {
        out.push_back(std::move(*name));
      }
    }
    return out;
  }

  // limit() reads one limit from the keys of `es` (other keys are ignored: a path-rule
  // descriptor carries its limit keys inline). `context` names the map in messages ("rate_limit",
  // "limits[0]", or "" for inline keys); `where` is the map's location. Envoy's rate_limit
  // defaults requests_per_unit to 0 when absent; path rules require it.
  LimitDef limit(const Entries& es, const SourceLocation& where, const std::string& context,
                 bool require_requests_per_unit) {
    LimitDef def;
    def.where = where;
    const std::string owner = context.empty() ? "descriptor" : context;
    const Entry* e_unit = given(es, "unit");
    const Entry* e_rpu = given(es, "requests_per_unit");
    const Entry* e_unlimited = given(es, "unlimited");
    const Entry* e_name = given(es, "name");
    const Entry* e_replaces = given(es, "replaces");
    const Entry* e_algorithm = given(es, "algorithm");
    const Entry* e_multiplier = given(es, "unit_multiplier");
    const Entry* e_window = given(es, "window");
    const Entry* e_burst = given(es, "burst");
    const Entry* e_failure = given(es, "failure_mode");
    const Entry* e_consistency = given(es, "consistency");

    if (e_name != nullptr) def.name = string(*e_name, field(context, "name")).value_or("");
    if (e_failure != nullptr) {
      if (auto text = string(*e_failure, field(context, "failure_mode"))) {
        if (lower(*text) == "allow") {
          def.failure_mode = FailureMode::kAllow;
        } else if (lower(*text) == "deny") {
          def.failure_mode = FailureMode::kDeny;
        } else {
          error(value_loc(*e_failure),
                field(context, "failure_mode") + ": must be allow or deny, got " + quote(*text));
        }
      }
    }
    if (e_consistency != nullptr) {
      if (auto text = string(*e_consistency, field(context, "consistency"))) {
        if (auto c = parse_consistency(lower(*text))) {
          def.spec.consistency = *c;
        } else {
          error(value_loc(*e_consistency), field(context, "consistency") +
                                               ": must be strong or eventual, got " + quote(*text));
        }
      }
    }
    if (e_replaces != nullptr) def.replaces = replaces(*e_replaces, context, def.name);

    if (e_unlimited != nullptr && boolean(*e_unlimited, field(context, "unlimited")) == true) {
      def.unlimited = true;
      for (const Entry* e : {e_unit, e_rpu, e_multiplier, e_window, e_algorithm, e_burst}) {
        if (e != nullptr) {
          error(key_loc(*e),
                field(context, e->key) + ": should not be specified when unlimited is true");
        }
      }
      return def;
    }

    bool algorithm_ok = true;
    if (e_algorithm != nullptr) {
      algorithm_ok = false;
      if (auto text = string(*e_algorithm, field(context, "algorithm"))) {
        if (auto a = parse_algorithm(lower(*text))) {
          def.spec.algorithm = *a;
          algorithm_ok = true;
        } else {
          static constexpr std::string_view kAlgorithms[] = {
              "fixed_window", "sliding_window_log", "sliding_window_counter", "token_bucket"};
          std::string message = field(context, "algorithm") + ": unknown algorithm " + quote(*text);
          if (auto near = closest(*text, kAlgorithms)) {
            message += " (did you mean '" + std::string(*near) + "'?)";
          } else {
            message += " (expected " + std::string(kAlgorithmList) + ")";
          }
          error(value_loc(*e_algorithm), std::move(message));
        }
      }
    }

    if (e_window != nullptr) {
      // An explicit duration replaces the unit.
      def.unit = Unit::kUnknown;
      if (e_unit != nullptr) {
        error(key_loc(*e_unit), field(context, "unit") +
                                    ": cannot be combined with window (window replaces the unit)");
      }
      if (e_multiplier != nullptr) {
        error(key_loc(*e_multiplier),
              field(context, "unit_multiplier") + ": only applies with unit, not with window");
      }
      const std::string what = field(context, "window");
      if (auto text = string(*e_window, what)) {
        const Duration d = parse_duration(*text);
        if (d.status == Duration::kInvalid) {
          error(value_loc(*e_window), what + ": invalid duration " + quote(*text) + " (" +
                                          std::string(kDurationHelp) + ")");
        } else if (d.status == Duration::kTooLong) {
          error(value_loc(*e_window),
                what + ": must be at most 36600d (100 years), got " + quote(*text));
        } else if (d.micros < 1) {
          error(value_loc(*e_window), what + ": must be at least 1us, got " + quote(*text));
        } else {
          def.spec.window = d.micros;
        }
      }
    } else if (e_unit != nullptr) {
      const std::string what = field(context, "unit");
      std::optional<Unit> unit;
      if (auto text = string(*e_unit, what)) {
        unit = parse_unit(*text);
        if (!unit) {
          error(value_loc(*e_unit), what + ": invalid unit " + quote(*text) + " (expected " +
                                        std::string(kUnitList) + ")");
        }
      }
      std::optional<std::uint64_t> multiplier = 1;
      if (e_multiplier != nullptr) {
        multiplier = integer(*e_multiplier, field(context, "unit_multiplier"), 1, kMaxLimit);
      }
      if (unit && multiplier) {
        def.unit = *unit;
        const Micros one = unit_micros(*unit);
        if (*multiplier > static_cast<std::uint64_t>(kMaxWindow / one)) {
          error(value_loc(*e_multiplier),
                field(context, "unit_multiplier") + ": a window of " + std::to_string(*multiplier) +
                    " " + unit_name(*unit) +
                    "s is longer than the maximum of 36600 days (100 years)");
        } else {
          def.spec.window = one * static_cast<Micros>(*multiplier);
        }
      }
    } else {
      error(where, owner + ": missing 'unit' (" + std::string(kUnitList) +
                       "), or 'window' (a duration such as 30s)");
    }

    if (e_rpu != nullptr) {
      def.spec.limit =
          integer(*e_rpu, field(context, "requests_per_unit"), 0, kMaxLimit).value_or(0);
    } else if (require_requests_per_unit) {
      error(where, owner + ": missing 'requests_per_unit'");
    }

    if (e_burst != nullptr) {
      auto burst = integer(*e_burst, field(context, "burst"), 1, kMaxLimit);
      if (burst && algorithm_ok) {
        if (def.spec.algorithm != Algorithm::kTokenBucket) {
          error(key_loc(*e_burst), field(context, "burst") +
                                       ": only applies to algorithm token_bucket (this limit's "
                                       "algorithm is " +
                                       std::string(algorithm_name(def.spec.algorithm)) + ")");
        } else {
          def.spec.burst = *burst;
        }
      }
    }
    if (!refill_fits(def.spec)) {
      error(where, owner +
                       ": an empty bucket would take over 100 years to refill (burst x window "
                       "/ requests_per_unit); lower the burst or raise requests_per_unit");
    }
    return def;
  }

  // limit_map() reads a limit written as its own map (rate_limit, rate_limits[i], limits[i]).
  std::optional<LimitDef> limit_map(const YAML::Node& node, const SourceLocation& fallback,
                                    const std::string& context, bool path_rule) {
    const SourceLocation where = loc(node, fallback);
    if (!node.IsMap()) {
      error(where, context + ": must be a map of limit keys (unit, requests_per_unit, ...), got " +
                       describe(node));
      return std::nullopt;
    }
    const Entries es = entries(node, where);
    check_keys(es, kLimitKeys, Level::kLimit, context);
    return limit(es, where, context, path_rule);
  }

  // limit_list() reads rate_limits / limits: a list of limit maps.
  void limit_list(const Entry& e, bool path_rule, std::vector<LimitDef>& out) {
    if (!e.value.IsSequence()) {
      error(value_loc(e), e.key + ": must be a list of limits, got " + describe(e.value));
      return;
    }
    if (path_rule && e.value.size() == 0) {
      error(value_loc(e), e.key + ": must not be empty");
      return;
    }
    step(e.value.size());
    std::size_t i = 0;
    for (const YAML::Node& item : e.value) {
      const std::string context = e.key + "[" + std::to_string(i++) + "]";
      if (auto def = limit_map(item, value_loc(e), context, path_rule)) {
        out.push_back(std::move(*def));
      }
    }
  }

  // --- Envoy rules ---

  void read_envoy(const Entries& top, const SourceLocation& root_loc,
                  const std::vector<std::string_view>& suggested, RuleSource& out) {
    DomainRules domain;
    domain.where = root_loc;
    const Entry* d = find(top, "domain");
    if (d == nullptr) {
      if (!was_suggested(suggested, "domain")) {
        error(root_loc,
              "missing 'domain' (Envoy rules need a domain; path rules go under 'rules')");
      }
    } else {
      domain.where = value_loc(*d);
      domain.domain = string(*d, "domain").value_or("");
      if (domain.domain.empty() && (d->null() || d->value.IsScalar())) {
        error(value_loc(*d), "domain: must not be empty");
      }
    }
    if (const Entry* ds = given(top, "descriptors")) {
      descriptors(*ds, domain.domain, 1, domain.descriptors);
    }
    out.domains.push_back(std::move(domain));
  }

  void descriptors(const Entry& e, const std::string& parent_place, int depth,
                   std::vector<DescriptorRule>& out) {
    if (!e.value.IsSequence()) {
      error(value_loc(e), "descriptors: must be a list of descriptors, got " + describe(e.value));
      return;
    }
    if (e.value.size() == 0) return;
    if (depth > kMaxDescriptorDepth) {
      error(value_loc(e), "descriptors: nested more than " + std::to_string(kMaxDescriptorDepth) +
                              " levels deep");
      return;
    }
    step(e.value.size());
    // Envoy's duplicate check: the composite key "key_value" must be unique at one level.
    std::unordered_map<std::string, int> seen;
    for (const YAML::Node& item : e.value) {
      if (auto d = descriptor(item, value_loc(e), parent_place, depth, seen)) {
        out.push_back(std::move(*d));
      }
    }
  }

  std::optional<DescriptorRule> descriptor(const YAML::Node& node, const SourceLocation& fallback,
                                           const std::string& parent_place, int depth,
                                           std::unordered_map<std::string, int>& seen) {
    const SourceLocation where = loc(node, fallback);
    if (!node.IsMap()) {
      error(where, "descriptor must be a map with 'key', got " + describe(node));
      return std::nullopt;
    }
    const Entries es = entries(node, where);
    const auto suggested = check_keys(es, kDescriptorKeys, Level::kDescriptor, "");
    DescriptorRule r;
    r.where = where;

    const Entry* k = find(es, "key");
    if (k == nullptr || k->null()) {
      if (!was_suggested(suggested, "key")) error(where, "descriptor has no 'key'");
    } else if (auto key = string(*k, "key")) {
      if (key->empty()) error(value_loc(*k), "key: must not be empty");
      r.key = std::move(*key);
    }
    if (const Entry* v = given(es, "value")) r.value = string(*v, "value").value_or("");
    if (const Entry* s = given(es, "shadow_mode")) {
      r.shadow_mode = boolean(*s, "shadow_mode").value_or(false);
    }
    if (const Entry* m = given(es, "detailed_metric")) {
      r.detailed_metric = boolean(*m, "detailed_metric").value_or(false);
    }

    const Entry* one = given(es, "rate_limit");
    const Entry* many = given(es, "rate_limits");
    if (one != nullptr && many != nullptr) {
      error(key_loc(*many),
            "rate_limits: cannot be combined with rate_limit; list every limit under rate_limits");
    } else if (one != nullptr) {
      if (auto def = limit_map(one->value, key_loc(*one), "rate_limit", false)) {
        r.limits.push_back(std::move(*def));
      }
    } else if (many != nullptr) {
      limit_list(*many, false, r.limits);
    }

    const std::string final_key = composite(r.key, r.value);
    const std::string place = parent_place + "." + final_key;
    if (!r.key.empty()) {
      auto [first, inserted] = seen.emplace(final_key, where.line);
      if (!inserted) {
        error(where, "duplicate descriptor composite key " + quote(place) + " (first at line " +
                         std::to_string(first->second) + ")");
      }
    }
    if (const Entry* ds = given(es, "descriptors")) {
      descriptors(*ds, place, depth + 1, r.descriptors);
    }
    return r;
  }

  // --- path rules ---

  void read_path_rules(const Entry& e, RuleSource& out) {
    if (e.null()) return;
    if (!e.value.IsSequence()) {
      error(value_loc(e), "rules: must be a list of rules, got " + describe(e.value));
      return;
    }
    step(e.value.size());
    std::size_t i = 0;
    for (const YAML::Node& item : e.value) {
      const std::string context = "rules[" + std::to_string(i++) + "]";
      const SourceLocation where = loc(item, value_loc(e));
      if (!item.IsMap()) {
        error(where,
              context + ": must be a map with 'path' and 'descriptors', got " + describe(item));
        continue;
      }
      const Entries es = entries(item, where);
      const auto suggested = check_keys(es, kPathRuleKeys, Level::kPathRule, "");
      PathRule rule;
      rule.where = where;
      const Entry* p = given(es, "path");
      if (p == nullptr) {
        if (!was_suggested(suggested, "path")) error(where, context + ": missing 'path'");
      } else if (auto path = string(*p, "path")) {
        if (path->empty()) error(value_loc(*p), "path: must not be empty");
        rule.path = std::move(*path);
      }
      const Entry* ds = given(es, "descriptors");
      if (ds == nullptr) {
        if (!was_suggested(suggested, "descriptors")) {
          error(where, context + ": missing 'descriptors'");
        }
      } else if (!ds->value.IsSequence() || ds->value.size() == 0) {
        error(value_loc(*ds),
              "descriptors: must be a non-empty list of descriptors, got " +
                  (ds->value.IsSequence() ? std::string("an empty list") : describe(ds->value)));
      } else {
        step(ds->value.size());
        for (const YAML::Node& d : ds->value) {
          if (auto pd = path_descriptor(d, value_loc(*ds))) {
            rule.descriptors.push_back(std::move(*pd));
          }
        }
      }
      out.path_rules.push_back(std::move(rule));
    }
  }

  std::optional<PathDescriptorRule> path_descriptor(const YAML::Node& node,
                                                    const SourceLocation& fallback) {
    const SourceLocation where = loc(node, fallback);
    if (!node.IsMap()) {
      error(where, "descriptor must be a map with 'key' and a limit, got " + describe(node));
      return std::nullopt;
    }
    const Entries es = entries(node, where);
    const auto suggested = check_keys(es, kPathDescriptorKeys, Level::kPathDescriptor, "");
    PathDescriptorRule d;
    d.where = where;
    const Entry* k = given(es, "key");
    if (k == nullptr) {
      if (!was_suggested(suggested, "key")) error(where, "descriptor has no 'key'");
    } else if (auto key = string(*k, "key")) {
      if (key->empty()) error(value_loc(*k), "key: must not be empty");
      d.key = std::move(*key);
    }
    if (const Entry* v = given(es, "value")) d.value = string(*v, "value");
    if (const Entry* s = given(es, "shadow_mode")) {
      d.shadow_mode = boolean(*s, "shadow_mode").value_or(false);
    }

    const Entry* inline_key = nullptr;
    for (const Entry& e : es) {
      if (contains(kLimitKeys, e.key)) {
        inline_key = &e;
        break;
      }
    }
    const Entry* limits = given(es, "limits");
    if (limits != nullptr && inline_key != nullptr) {
      error(key_loc(*limits), "limits: cannot be combined with '" + inline_key->key +
                                  "' beside it; put every limit under limits");
    } else if (limits != nullptr) {
      limit_list(*limits, true, d.limits);
    } else if (inline_key != nullptr) {
      d.limits.push_back(limit(es, where, "", true));
    } else if (!was_suggested(suggested, "limits") && !was_suggested(suggested, "unit") &&
               !was_suggested(suggested, "requests_per_unit")) {
      error(where,
            "descriptor has no limit: give unit and requests_per_unit (or window, or "
            "unlimited: true), or a list under 'limits'");
    }
    return d;
  }

  // --- the file ---

  void read_text(std::string_view text, RuleSource& out) {
    // A NUL byte is not text: yaml-cpp reads it as the end of input in some places and words
    // its refusal strangely in others ("bad character found while scanning hex number").
    if (const std::size_t nul = text.find('\0'); nul != std::string_view::npos) {
      const std::size_t line_start = text.rfind('\n', nul);
      const std::size_t col = line_start == std::string_view::npos ? nul + 1 : nul - line_start;
      const auto line =
          1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(nul), '\n');
      error({file_, static_cast<int>(line), static_cast<int>(col)},
            "NUL byte: a rule file must be text (YAML or JSON)");
      return;
    }
    std::vector<YAML::Node> docs;
    try {
      if (const std::optional<YAML::Mark> stuck = stuck_document(text)) {
        error(
            mark(*stuck, {file_, 1, 1}),
            "invalid YAML: unexpected " +
                quote(text.substr(std::min(static_cast<std::size_t>(stuck->pos), text.size()), 1)));
        return;
      }
      docs = YAML::LoadAll(std::string(text));
    } catch (const YAML::DeepRecursion& e) {
      error(mark(e.mark, {file_, 1, 1}), "invalid YAML: nested too deeply");
      return;
    } catch (const YAML::ParserException& e) {
      error(mark(e.mark, {file_, 1, 1}), "invalid YAML: " + e.msg);
      return;
    }
    std::vector<const YAML::Node*> present;
    for (const YAML::Node& d : docs) {
      if (!d.IsNull()) present.push_back(&d);
    }
    if (present.empty()) {
      error({file_, 1, 1},
            "empty file: expected a map with 'domain' (Envoy rules) or 'rules' (path rules)");
      return;
    }
    if (present.size() > 1) {
      error(loc(*present[1], {file_, 1, 1}),
            "more than one YAML document in this file; put each domain in a file of its own");
    }
    const YAML::Node& root = *present[0];
    const SourceLocation root_loc = loc(root, {file_, 1, 1});
    if (!root.IsMap()) {
      error(root_loc,
            "top level must be a map with 'domain' (Envoy rules) or 'rules' (path rules), got " +
                describe(root));
      return;
    }
    const Entries top = entries(root, root_loc);
    const Entry* rules = find(top, "rules");
    const Entry* domain = find(top, "domain");
    if (rules != nullptr && domain == nullptr) {
      check_keys(top, kPathTopKeys, Level::kPathTop, "");
      read_path_rules(*rules, out);
      check_path_duplicates(out.path_rules, errors_);
      return;
    }
    Entries envoy_top;
    for (const Entry& e : top) {
      if (e.key == "rules") {
        error(key_loc(e),
              "rules: a file holds Envoy rules ('domain') or path rules ('rules'), not both");
      } else {
        envoy_top.push_back(e);
      }
    }
    const auto suggested = check_keys(envoy_top, kEnvoyTopKeys, Level::kEnvoyTop, "");
    read_envoy(top, root_loc, suggested, out);
  }

 public:
  // check_path_duplicates() reports a path rule descriptor (path, key, value) defined twice.
  static void check_path_duplicates(const std::vector<PathRule>& rules,
                                    std::vector<ConfigError>& errors) {
    std::unordered_map<std::string, const PathDescriptorRule*> seen;
    for (const PathRule& rule : rules) {
      for (const PathDescriptorRule& d : rule.descriptors) {
        std::string id = rule.path;
        id += '\0';
        id += d.key;
        id += '\0';
        id += d.value ? "=" + *d.value : std::string("*");
        auto [first, inserted] = seen.emplace(std::move(id), &d);
        if (inserted) continue;
        std::string what = "duplicate path rule: path " + quote(rule.path) + ", key " +
                           quote(d.key) +
                           (d.value ? ", value " + quote(*d.value) : std::string(" (any value)"));
        errors.push_back({d.where, what + " is already defined at " + at(first->second->where)});
      }
    }
  }

 private:
  const std::string& file_;
  std::vector<ConfigError> errors_;
  std::size_t steps_ = 0;
};

// --- checks on a RuleSource (from files or an API) ----------------------------------------------

void check_limits(const std::vector<LimitDef>& limits, const std::string& place,
                  const SourceLocation& owner, std::vector<ConfigError>& errors) {
  for (const LimitDef& def : limits) {
    if (def.unlimited) continue;
    const SourceLocation& where = def.where.file.empty() && def.where.line == 0 ? owner : def.where;
    if (def.spec.window <= 0 || def.spec.window > kMaxWindow) {
      errors.push_back({where, place + ": window must be from 1us to 36600d (100 years), got " +
                                   std::to_string(def.spec.window) + "us"});
    }
    if (def.spec.limit > kMaxLimit) {
      errors.push_back({where, place + ": requests_per_unit must be at most " +
                                   std::to_string(kMaxLimit) + ", got " +
                                   std::to_string(def.spec.limit)});
    }
    if (def.spec.burst > kMaxLimit) {
      errors.push_back({where, place + ": burst must be at most " + std::to_string(kMaxLimit) +
                                   ", got " + std::to_string(def.spec.burst)});
    }
  }
}

void check_tree(const std::vector<DescriptorRule>& rules, const std::string& parent_place,
                int depth, std::vector<ConfigError>& errors) {
  if (rules.empty()) return;
  if (depth > kMaxDescriptorDepth) {
    errors.push_back({rules.front().where, parent_place + ": descriptors nested more than " +
                                               std::to_string(kMaxDescriptorDepth) +
                                               " levels deep"});
    return;
  }
  std::unordered_map<std::string, const DescriptorRule*> seen;
  for (const DescriptorRule& r : rules) {
    const std::string final_key = composite(r.key, r.value);
    const std::string place = parent_place + "." + final_key;
    if (r.key.empty()) {
      errors.push_back({r.where, "descriptor under " + quote(parent_place) + " has an empty key"});
    } else if (auto [first, inserted] = seen.emplace(final_key, &r); !inserted) {
      errors.push_back({r.where, "duplicate descriptor composite key " + quote(place) +
                                     " (first at " + at(first->second->where) + ")"});
    }
    check_limits(r.limits, place, r.where, errors);
    check_tree(r.descriptors, place, depth + 1, errors);
  }
}

// read_file() reads a whole file, or returns an error message.
std::optional<std::string> read_file(const fs::path& path, std::string& message) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    message = "cannot read: " + (err != 0 ? std::error_code(err, std::generic_category()).message()
                                          : std::string("cannot open file"));
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    message = "cannot read: read error";
    return std::nullopt;
  }
  return std::move(text).str();
}

bool is_rule_file(const fs::path& path) {
  const std::string ext = path.extension().string();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

bool is_hidden(const fs::path& path) {
  const std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

// collect() lists the rule files `arg` names: itself if a file, else every *.yaml, *.yml and
// *.json under it, skipping hidden names, sorted by path.
std::vector<fs::path> collect(const std::string& arg, std::vector<ConfigError>& errors) {
  std::vector<fs::path> files;
  std::error_code ec;
  const fs::path root(arg);
  const fs::file_status st = fs::status(root, ec);
  if (ec || !fs::exists(st)) {
    errors.push_back(
        {{arg, 0, 0}, "cannot read: " + (ec ? ec.message() : std::string("no such file"))});
    return files;
  }
  if (fs::is_regular_file(st)) {
    files.push_back(root);
    return files;
  }
  if (!fs::is_directory(st)) {
    errors.push_back({{arg, 0, 0}, "cannot read: not a regular file or a directory"});
    return files;
  }
  fs::recursive_directory_iterator it(root, fs::directory_options::none, ec);
  if (ec) {
    errors.push_back({{arg, 0, 0}, "cannot read directory: " + ec.message()});
    return files;
  }
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    if (is_hidden(entry.path())) {
      std::error_code dir_ec;
      if (entry.is_directory(dir_ec)) it.disable_recursion_pending();
      continue;
    }
    std::error_code file_ec;
    if (entry.is_regular_file(file_ec) && is_rule_file(entry.path())) {
      files.push_back(entry.path());
    }
  }
  if (ec) {
    errors.push_back({{arg, 0, 0}, "cannot read directory: " + ec.message()});
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::string ConfigError::to_string() const {
  // A problem with a file as a whole (missing, unreadable) has no line: "file: message".
  if (where.line <= 0) {
    return where.file.empty() ? message : where.file + ": " + message;
  }
  return where.file + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) + ": " +
         message;
}

// parse_rules() leaves `into` untouched when the file has errors: a file loads whole or not at all.
std::vector<ConfigError> parse_rules(std::string_view text, const std::string& file,
                                     RuleSource& into) {
  return Reader(file).read(text, into);
}

std::vector<ConfigError> check_rules(const RuleSource& source) {
  std::vector<ConfigError> errors;
  std::unordered_map<std::string_view, const DomainRules*> domains;
  for (const DomainRules& d : source.domains) {
    if (d.domain.empty()) {
      errors.push_back({d.where, "domain must not be empty"});
    } else if (auto [first, inserted] = domains.emplace(d.domain, &d); !inserted) {
      errors.push_back({d.where, "duplicate domain " + quote(d.domain) + ": already defined at " +
                                     at(first->second->where)});
    }
    check_tree(d.descriptors, d.domain, 1, errors);
  }
  for (const PathRule& rule : source.path_rules) {
    if (rule.path.empty()) errors.push_back({rule.where, "path rule has an empty path"});
    for (const PathDescriptorRule& d : rule.descriptors) {
      const std::string place = "path " + quote(rule.path) + ", key " + quote(d.key);
      if (d.key.empty()) {
        errors.push_back(
            {d.where, "path rule " + quote(rule.path) + ": descriptor has an empty key"});
      }
      check_limits(d.limits, place, d.where, errors);
    }
  }
  Reader::check_path_duplicates(source.path_rules, errors);
  return errors;
}

std::optional<std::string> read_rule_file(const std::string& path, std::string& message) {
  return read_file(path, message);
}

std::vector<std::string> rule_files(const std::vector<std::string>& paths,
                                    std::vector<ConfigError>& errors) {
  std::vector<std::string> files;
  std::unordered_set<std::string> seen;  // canonical paths, so no file is listed twice
  for (const std::string& arg : paths) {
    for (const fs::path& file : collect(arg, errors)) {
      std::error_code ec;
      fs::path canonical = fs::weakly_canonical(file, ec);
      if (ec) canonical = file.lexically_normal();
      if (seen.insert(canonical.string()).second) files.push_back(file.string());
    }
  }
  return files;
}

LoadResult load_rules(const std::vector<std::string>& paths) {
  LoadResult result;
  std::vector<ConfigError>& errors = result.errors;
  for (const std::string& name : rule_files(paths, errors)) {
    std::string message;
    std::optional<std::string> text = read_file(name, message);
    if (!text) {
      errors.push_back({{name, 0, 0}, std::move(message)});
      continue;
    }
    // Files with errors add nothing, so the checks across files below see only good files
    // and never repeat a file's own errors.
    std::vector<ConfigError> file_errors = parse_rules(*text, name, result.source);
    for (auto& e : file_errors)
      errors.push_back(std::move(e));
  }
  for (auto& e : check_rules(result.source))
    errors.push_back(std::move(e));
  if (!errors.empty()) result.source = RuleSource{};
  return result;
}

std::shared_ptr<const RuleSet> compile_rules(const std::vector<std::string>& paths,
                                             std::vector<ConfigError>& errors) {
  errors.clear();
  LoadResult loaded = load_rules(paths);
  if (!loaded.ok()) {
    errors = std::move(loaded.errors);
    return nullptr;
  }
  try {
    return RuleSet::compile(std::move(loaded.source));
  } catch (const std::exception& e) {
    // Not expected: check_rules() refuses everything compile() throws on.
    errors.push_back({{}, std::string("cannot compile rules: ") + e.what()});
    return nullptr;
  }
}

}  // namespace sluice
