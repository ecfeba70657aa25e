#include "sluice/json.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "json/scanner.h"

namespace sluice {

namespace {

using nlohmann::json;

// to_ms() renders a duration in microseconds as whole milliseconds, rounded up. kNever (a wait
// that never ends) is -1; a negative duration (which the algorithms never report) is 0.
std::int64_t to_ms(Micros us) {
  if (us == kNever) return -1;
  if (us <= 0) return 0;
  return us / 1000 + (us % 1000 != 0 ? 1 : 0);
}

json entry_json(std::string_view key, std::string_view value) {
  json e = json::object();
  e["key"] = std::string(key);
  e["value"] = std::string(value);
  return e;
}

// decision_json() renders everything but each status's "descriptor", which `descriptor_of`
// builds from the request.
template <typename DescriptorOf>
json decision_json(const Decision& d, DescriptorOf&& descriptor_of) {
  json out = json::object();
  out["allowed"] = d.allowed;
  out["limit"] = d.limit;
  out["remaining"] = d.remaining;
  out["reset_after_ms"] = to_ms(d.reset_after);
  out["retry_after_ms"] = to_ms(d.retry_after);
  json statuses = json::array();
  for (const DescriptorStatus& st : d.statuses) {
    json s = json::object();
    s["descriptor"] = descriptor_of(st.descriptor_index);
    s["name"] = st.name;
    s["algorithm"] = std::string(algorithm_name(st.spec.algorithm));
    s["allowed"] = st.allowed;
    s["limit"] = st.limit;
    s["remaining"] = st.remaining;
    s["reset_after_ms"] = to_ms(st.reset_after);
    s["retry_after_ms"] = to_ms(st.retry_after);
    s["shadow"] = st.shadow;
    if (st.unlimited) s["unlimited"] = true;
    statuses.push_back(std::move(s));
  }
  out["statuses"] = std::move(statuses);
  if (!d.error.empty()) out["error"] = d.error;
  return out;
}

// --- direct rendering -------------------------------------------------------------------------
// What dump_json() renders for decision_json()'s DOM, written straight into a string.

using namespace std::string_view_literals;

void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

void append_int(std::string& out, std::int64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

void append_bool(std::string& out, bool v) {
  out += v ? "true"sv : "false"sv;
}

using json_text::utf8_tail;

// append_string() appends `s` quoted, as nlohmann's dump(-1, ' ', false, replace) does: `"` `\`
// and \b \f \n \r \t escaped, other bytes below 0x20 as \u00xx (lower-case hex), valid UTF-8
// copied. An invalid byte sequence becomes one U+FFFD: the well-formed prefix read so far is
// dropped and the byte that broke it is read again as the start of a new sequence.
void append_string(std::string& out, std::string_view s) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    std::size_t plain = i;
    while (plain < n) {
      const auto c = static_cast<unsigned char>(s[plain]);
      if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
      ++plain;
    }
    out.append(s.data() + i, plain - i);
    i = plain;
    if (i == n) break;
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\""sv;
          break;
        case '\\':
          out += "\\\\"sv;
          break;
        case '\b':
          out += "\\b"sv;
          break;
        case '\f':
          out += "\\f"sv;
          break;
        case '\n':
          out += "\\n"sv;
          break;
        case '\r':
          out += "\\r"sv;
          break;
        case '\t':
          out += "\\t"sv;
          break;
        default:
          out += "\\u00"sv;
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
      }
      ++i;
      continue;
    }
    unsigned char lo = 0;
    unsigned char hi = 0;
    const int tail = utf8_tail(c, lo, hi);
    if (tail == 0) {  // not a lead byte: replaced, and skipped
      out += kReplacement;
      ++i;
      continue;
    }
    std::size_t j = 1;  // bytes of the sequence read so far
    for (; j <= static_cast<std::size_t>(tail); ++j) {
      if (i + j >= n) break;
      const auto b = static_cast<unsigned char>(s[i + j]);
      if (b < lo || b > hi) break;
      lo = 0x80;
      hi = 0xBF;
    }
    if (j > static_cast<std::size_t>(tail)) {
      out.append(s.data() + i, j);
    } else {
      out += kReplacement;  // truncated at the end, or broken at i + j: read that byte again
    }
    i += j;
  }
  out += '"';
}

void append_entry(std::string& out, std::string_view key, std::string_view value) {
  out += "{\"key\":"sv;
  append_string(out, key);
  out += ",\"value\":"sv;
  append_string(out, value);
  out += '}';
}

// append_decision() renders decision_json()'s DOM; `descriptor_of` appends each status's
// "descriptor" array. Keys are in std::map order.
template <typename DescriptorOf>
void append_decision(std::string& out, const Decision& d, DescriptorOf&& descriptor_of) {
  // Room for the usual rendering (about 250 bytes a status), so that it grows once.
  out.reserve(out.size() + 128 + 320 * d.statuses.size() + d.error.size());
  out += "{\"allowed\":"sv;
  append_bool(out, d.allowed);
  if (!d.error.empty()) {
    out += ",\"error\":"sv;
    append_string(out, d.error);
  }
  out += ",\"limit\":"sv;
  append_uint(out, d.limit);
  out += ",\"remaining\":"sv;
  append_uint(out, d.remaining);
  out += ",\"reset_after_ms\":"sv;
  append_int(out, to_ms(d.reset_after));
  out += ",\"retry_after_ms\":"sv;
  append_int(out, to_ms(d.retry_after));
  out += ",\"statuses\":["sv;
  bool first = true;
  for (const DescriptorStatus& st : d.statuses) {
    if (!first) out += ',';
    first = false;
    out += "{\"algorithm\":"sv;
    append_string(out, algorithm_name(st.spec.algorithm));
    out += ",\"allowed\":"sv;
    append_bool(out, st.allowed);
    out += ",\"descriptor\":["sv;
    descriptor_of(st.descriptor_index);
    out += "],\"limit\":"sv;
    append_uint(out, st.limit);
    out += ",\"name\":"sv;
    append_string(out, st.name);
    out += ",\"remaining\":"sv;
    append_uint(out, st.remaining);
    out += ",\"reset_after_ms\":"sv;
    append_int(out, to_ms(st.reset_after));
    out += ",\"retry_after_ms\":"sv;
    append_int(out, to_ms(st.retry_after));
    out += ",\"shadow\":"sv;
    append_bool(out, st.shadow);
    if (st.unlimited) out += ",\"unlimited\":true"sv;
    out += '}';
  }
  out += "]}"sv;
}

// --- request parsing --------------------------------------------------------------------------

// Field paths in messages: "descriptors[0].entries[1].value".
std::string field(const std::string& parent, std::string_view name) {
  return parent.empty() ? std::string(name) : parent + "." + std::string(name);
}
std::string index(const std::string& parent, std::size_t i) {
  return parent + "[" + std::to_string(i) + "]";
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return "a number";
    case json::value_t::binary:
      return "binary data";
    case json::value_t::discarded:
      break;
  }
  return "an invalid value";
}

std::string expected(const std::string& where, std::string_view what, const json& got) {
  return where + ": expected " + std::string(what) + ", got " + type_name(got);
}

// read_cost() reads a cost: an integer 0 <= c <= kMaxLimit (Envoy's hits_addend is a uint32;
// the bound also keeps sums of costs far from overflowing).
bool read_cost(const json& v, const std::string& where, std::uint64_t& out, std::string& error) {
  if (v.is_number_unsigned()) {
    const auto c = v.get<std::uint64_t>();
    if (c > kMaxLimit) {
      error = where + ": must be at most " + std::to_string(kMaxLimit);
      return false;
    }
    out = c;
    return true;
  }
  if (v.is_number_integer()) {  // nlohmann stores non-negative integers as unsigned
    error = where + ": must not be negative";
    return false;
  }
  if (v.is_number_float()) {
    error = where + ": expected a whole number, got " + v.dump();
    return false;
  }
  error = expected(where, "a non-negative integer", v);
  return false;
}

bool read_string(const json& v, const std::string& where, std::string& out, std::string& error) {
  if (!v.is_string()) {
    error = expected(where, "a string", v);
    return false;
  }
  out = v.get_ref<const std::string&>();
  return true;
}

// member() returns the member `name` of an object, or nullptr.
const json* member(const json& object, std::string_view name) {
  const auto it = object.find(name);
  return it == object.end() ? nullptr : &*it;
}

// cost_member() returns the one member of `names` present (a field and its aliases), or nullptr;
// two present is an error.
bool cost_member(const json& object, const std::string& where,
                 std::initializer_list<std::string_view> names, const json*& out, std::string& name,
                 std::string& error) {
  out = nullptr;
  for (std::string_view n : names) {
    const json* v = member(object, n);
    if (v == nullptr) continue;
    if (out != nullptr) {
      error =
          field(where, n) + ": give only one of \"" + name + "\" and \"" + std::string(n) + "\"";
      return false;
    }
    out = v;
    name = n;
  }
  return true;
}

// only_fields() rejects any member of `object` not in `allowed`: a misspelt field is an error
// rather than silently ignored.
bool only_fields(const json& object, const std::string& where,
                 std::initializer_list<std::string_view> allowed, std::string& error) {
  for (const auto& [key, value] : object.items()) {
    bool known = false;
    for (std::string_view a : allowed)
      known |= key == a;
    if (!known) {
      error = field(where, key) + ": unknown field";
      return false;
    }
  }
  return true;
}

std::optional<Unit> parse_unit(std::string_view s) {
  std::string lower;
  for (char c : s)
    lower.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  for (Unit u : {Unit::kSecond, Unit::kMinute, Unit::kHour, Unit::kDay, Unit::kWeek, Unit::kMonth,
                 Unit::kYear}) {
    if (lower == unit_name(u)) return u;
  }
  return std::nullopt;
}

// read_override() reads Envoy's per-descriptor limit override:
// {"requests_per_unit": n, "unit": "second"|"SECOND"|...}.
bool read_override(const json& v, const std::string& where, LimitOverride& out,
                   std::string& error) {
  if (!v.is_object()) {
    error = expected(where, "an object {\"requests_per_unit\": n, \"unit\": ...}", v);
    return false;
  }
  const json* n = nullptr;
  std::string n_name = "requests_per_unit";
  if (!cost_member(v, where, {"requests_per_unit", "requestsPerUnit"}, n, n_name, error))
    return false;
  if (n == nullptr) {
    error = field(where, "requests_per_unit") + ": missing";
    return false;
  }
  std::uint64_t count = 0;
  if (!read_cost(*n, field(where, n_name), count, error)) return false;
  out.requests_per_unit = static_cast<std::uint32_t>(count);
  const json* unit = member(v, "unit");
  if (unit == nullptr) {
    error = field(where, "unit") + ": missing";
    return false;
  }
  std::string text;
  if (!read_string(*unit, field(where, "unit"), text, error)) return false;
  const std::optional<Unit> u = parse_unit(text);
  if (!u) {
    error = field(where, "unit") + ": unknown unit '" + text +
            "' (second, minute, hour, day, week, month or year)";
    return false;
  }
  out.unit = *u;
  return only_fields(v, where, {"requests_per_unit", "requestsPerUnit", "unit"}, error);
}

bool read_entry(const json& v, const std::string& where, DescriptorEntry& out, std::string& error) {
  if (!v.is_object()) {
    error = expected(where, "an object {\"key\": ..., \"value\": ...}", v);
    return false;
  }
  const json* key = member(v, "key");
  if (key == nullptr) {
    error = field(where, "key") + ": missing";
    return false;
  }
  if (!read_string(*key, field(where, "key"), out.key, error)) return false;
  if (out.key.empty()) {
    error = field(where, "key") + ": must not be empty";
    return false;
  }
  // A missing value is the empty string, as in protobuf's JSON form.
  if (const json* value = member(v, "value")) {
    if (!read_string(*value, field(where, "value"), out.value, error)) return false;
  }
  return only_fields(v, where, {"key", "value"}, error);
}

bool read_descriptor(const json& v, const std::string& where, Descriptor& out, std::string& error) {
  if (!v.is_object()) {
    error = expected(where, "an object {\"entries\": [...]}", v);
    return false;
  }
  const std::string at = field(where, "entries");
  const json* entries = member(v, "entries");
  if (entries == nullptr) {
    error = at + ": missing";
    return false;
  }
  if (!entries->is_array()) {
    error = expected(at, "an array", *entries);
    return false;
  }
  if (entries->empty()) {
    error = at + ": must not be empty";
    return false;
  }
  out.entries.reserve(entries->size());
  for (std::size_t i = 0; i < entries->size(); ++i) {
    if (!read_entry((*entries)[i], index(at, i), out.entries.emplace_back(), error)) return false;
  }
  const json* cost = nullptr;
  std::string cost_name = "hits_addend";
  if (!cost_member(v, where, {"hits_addend", "hitsAddend"}, cost, cost_name, error)) return false;
  if (cost != nullptr) {
    std::uint64_t c = 0;
    if (!read_cost(*cost, field(where, cost_name), c, error)) return false;
    out.cost = c;
  }
  if (const json* limit = member(v, "limit")) {
    LimitOverride o;
    if (!read_override(*limit, field(where, "limit"), o, error)) return false;
    out.limit = o;
  }
  return only_fields(v, where, {"entries", "hits_addend", "hitsAddend", "limit"}, error);
}

std::optional<AnyRequest> parse_envoy(const json& body, std::string& error) {
  Request r;
  const json* domain = member(body, "domain");
  if (domain == nullptr) {
    error = "domain: missing";
    return std::nullopt;
  }
  if (!read_string(*domain, "domain", r.domain, error)) return std::nullopt;
  if (r.domain.empty()) {
    error = "domain: must not be empty";
    return std::nullopt;
  }
  const json* descriptors = member(body, "descriptors");
  if (descriptors == nullptr) {
    error = "descriptors: missing";
    return std::nullopt;
  }
  if (!descriptors->is_array()) {
    error = expected("descriptors", "an array", *descriptors);
    return std::nullopt;
  }
  if (descriptors->empty()) {
    error = "descriptors: must not be empty";
    return std::nullopt;
  }
  r.descriptors.reserve(descriptors->size());
  for (std::size_t i = 0; i < descriptors->size(); ++i) {
    if (!read_descriptor((*descriptors)[i], index("descriptors", i), r.descriptors.emplace_back(),
                         error)) {
      return std::nullopt;
    }
  }
  const json* cost = nullptr;
  std::string cost_name = "cost";
  if (!cost_member(body, "", {"cost", "hits_addend", "hitsAddend"}, cost, cost_name, error))
    return std::nullopt;
  if (cost != nullptr && !read_cost(*cost, cost_name, r.cost, error)) return std::nullopt;
  if (!only_fields(body, "", {"domain", "descriptors", "cost", "hits_addend", "hitsAddend"}, error))
    return std::nullopt;
  return AnyRequest(std::move(r));
}

std::optional<AnyRequest> parse_path(const json& body, std::string& error) {
  PathRequest r;
  const json* path = member(body, "path");
  if (path == nullptr) {
    error = "path: missing";
    return std::nullopt;
  }
  if (!read_string(*path, "path", r.path, error)) return std::nullopt;
  if (r.path.empty()) {
    error = "path: must not be empty";
    return std::nullopt;
  }
  if (const json* data = member(body, "data")) {
    if (!data->is_object()) {
      error = expected("data", "an object of strings", *data);
      return std::nullopt;
    }
    r.data.reserve(data->size());
    for (const auto& [k, v] : data->items()) {
      std::string value;
      if (!read_string(v, field("data", k), value, error)) return std::nullopt;
      r.data.emplace_back(k, std::move(value));
    }
  }
  if (const json* cost = member(body, "cost")) {
    if (!read_cost(*cost, "cost", r.cost, error)) return std::nullopt;
  }
  if (!only_fields(body, "", {"path", "data", "cost"}, error)) return std::nullopt;
  return AnyRequest(std::move(r));
}

// --- the fast path for request bodies --------------------------------------------------------

// DirectReader reads the common request bodies straight from the text into a Request or a
// PathRequest. Every step returns false on anything it is not certain parse_request_json() reads
// the same way (an escape it does not decode, a repeated field, a missing or empty required
// field, any error); the caller then takes the DOM path, which decides and words the error.
class DirectReader : json_text::Scanner {
 public:
  using Scanner::Scanner;

  std::optional<AnyRequest> read() {
    enum : unsigned { kDomain = 1, kDescriptors = 2, kCost = 4, kPath = 8, kData = 16 };
    Request envoy;
    PathRequest path;
    std::uint64_t cost = 1;
    bool cost_is_cost = true;  // spelt "cost" (the path form takes no other spelling)
    unsigned seen = 0;
    const bool ok = object([&](std::string_view key) {
      if (key == "domain") return once(seen, kDomain) && quoted(envoy.domain);
      if (key == "descriptors") {
        return once(seen, kDescriptors) &&
               array([&] { return descriptor(envoy.descriptors.emplace_back()); });
      }
      if (key == "cost" || key == "hits_addend" || key == "hitsAddend") {
        cost_is_cost = key == "cost";
        return once(seen, kCost) && number(kMaxLimit, cost);
      }
      if (key == "path") return once(seen, kPath) && quoted(path.path);
      if (key == "data") return once(seen, kData) && data(path.data);
      return false;
    });
    skip_space();
    if (!ok || p_ != end_) return std::nullopt;
    const bool is_envoy = (seen & (kDomain | kDescriptors)) != 0;
    const bool is_path = (seen & (kPath | kData)) != 0;
    if (is_envoy == is_path) return std::nullopt;
    if (is_path) {
      if (path.path.empty() || !cost_is_cost) return std::nullopt;
      path.cost = cost;
      return AnyRequest(std::move(path));
    }
    if (envoy.domain.empty() || envoy.descriptors.empty()) return std::nullopt;
    envoy.cost = cost;
    return AnyRequest(std::move(envoy));
  }

 private:
  bool descriptor(Descriptor& out) {
    unsigned seen = 0;
    return object([&](std::string_view key) {
             if (key == "entries") {
               return once(seen, 1) && array([&] { return entry(out.entries.emplace_back()); });
             }
             if (key == "hits_addend" || key == "hitsAddend") {
               std::uint64_t c = 0;
               if (!once(seen, 2) || !number(kMaxLimit, c)) return false;
               out.cost = c;
               return true;
             }
             if (key == "limit") return once(seen, 4) && limit(out.limit.emplace());
             return false;
           }) &&
           !out.entries.empty();
  }

  bool entry(DescriptorEntry& out) {
    unsigned seen = 0;
    return object([&](std::string_view key) {
             if (key == "key") return once(seen, 1) && quoted(out.key);
             if (key == "value") return once(seen, 2) && quoted(out.value);
             return false;
           }) &&
           !out.key.empty();
  }

  bool limit(LimitOverride& out) {
    unsigned seen = 0;
    return object([&](std::string_view key) {
             if (key == "requests_per_unit" || key == "requestsPerUnit") {
               std::uint64_t n = 0;
               if (!once(seen, 1) || !number(kMaxLimit, n)) return false;
               out.requests_per_unit = static_cast<std::uint32_t>(n);
               return true;
             }
             if (key == "unit") {
               std::string text;
               if (!once(seen, 2) || !quoted(text)) return false;
               const std::optional<Unit> u = parse_unit(text);
               if (!u) return false;
               out.unit = *u;
               return true;
             }
             return false;
           }) &&
           seen == 3;
  }

  // data() reads {"name": "value", ...} in the DOM's order: sorted by name.
  bool data(std::vector<std::pair<std::string, std::string>>& out) {
    const bool read = members([this, &out] {
      auto& [name, value] = out.emplace_back();
      return quoted(name) && take(':') && quoted(value);
    });
    if (!read) return false;
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    return std::adjacent_find(out.begin(), out.end(), [](const auto& a, const auto& b) {
             return a.first == b.first;
           }) == out.end();
  }
};

// --- trace lines ------------------------------------------------------------------------------

// TraceSax builds the DOM like nlohmann's own parser, and also keeps the text of the top-level
// "t" number, so that seconds convert to microseconds exactly rather than through a double.
class TraceSax {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  explicit TraceSax(json& root) : dom_(root, false) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(number_integer_t v) {
    note_number(std::to_string(v));
    return dom_.number_integer(v);
  }
  bool number_unsigned(number_unsigned_t v) {
    note_number(std::to_string(v));
    return dom_.number_unsigned(v);
  }
  bool number_float(number_float_t v, const string_t& text) {
    note_number(text);
    return dom_.number_float(v, text);
  }
  bool string(string_t& v) { return dom_.string(v); }
  bool binary(binary_t& v) { return dom_.binary(v); }
  bool start_object(std::size_t n) {
    ++depth_;
    return dom_.start_object(n);
  }
  bool key(string_t& k) {
    if (depth_ == 1) last_key_ = k;
    return dom_.key(k);
  }
  bool end_object() {
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) {
    ++depth_;
    return dom_.start_array(n);
  }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  template <class Exception>
  bool parse_error(std::size_t position, const std::string& token, const Exception& ex) {
    message_ = ex.what();
    // "[json.exception.parse_error.101] parse error at ..." -> "parse error at ..."
    if (const auto close = message_.find("] "); message_.starts_with("[") && close != message_.npos)
      message_.erase(0, close + 2);
    return dom_.parse_error(position, token, ex);
  }

  const std::optional<std::string>& t_text() const { return t_text_; }
  const std::string& message() const { return message_; }

 private:
  void note_number(const std::string& text) {
    if (depth_ == 1 && last_key_ == "t") t_text_ = text;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  int depth_ = 0;
  std::string last_key_;
  std::optional<std::string> t_text_;
  std::string message_;
};

// seconds_text_to_micros() converts a JSON number's text (seconds) to microseconds exactly,
// rounding to the nearest microsecond (halves away from zero). Returns nullopt when the value is
// negative or does not fit.
std::optional<Micros> seconds_text_to_micros(std::string_view text) {
  std::size_t i = 0;
  if (i < text.size() && text[i] == '-') return std::nullopt;
  std::string digits;  // significant digits, value = digits * 10^exp10
  std::int64_t exp10 = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i)
    digits.push_back(text[i]);
  if (i < text.size() && text[i] == '.') {
    for (++i; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      digits.push_back(text[i]);
      --exp10;
    }
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool negative = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) negative = text[i++] == '-';
    std::int64_t e = 0;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      if (e < 100'000) e = e * 10 + (text[i] - '0');  // saturate: far beyond any valid t
    }
    exp10 += negative ? -e : e;
  }
  if (i != text.size() || digits.empty()) return std::nullopt;
  const std::size_t first = digits.find_first_not_of('0');
  if (first == std::string::npos) return Micros{0};
  digits.erase(0, first);

  // Micros = digits * 10^(exp10 + 6): keep the digits left of the decimal point, round on the
  // first one dropped.
  const std::int64_t shift = exp10 + 6;
  std::size_t keep = digits.size();
  int round_digit = 0;
  if (shift < 0) {
    const auto drop = static_cast<std::uint64_t>(-shift);
    if (drop > digits.size()) return Micros{0};  // below half a microsecond
    keep = digits.size() - static_cast<std::size_t>(drop);
    round_digit = digits[keep] - '0';
  } else if (static_cast<std::uint64_t>(shift) + digits.size() > 19) {
    return std::nullopt;  // > 10^19 us: does not fit
  }
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<Micros>::max());
  std::uint64_t v = 0;
  if (keep > 19) return std::nullopt;
  for (std::size_t k = 0; k < keep; ++k) {
    v = v * 10 + static_cast<std::uint64_t>(digits[k] - '0');  // < 10^19 < 2^64
  }
  for (std::int64_t k = 0; k < shift; ++k) {
    if (v > kMax / 10) return std::nullopt;
    v *= 10;
  }
  if (round_digit >= 5) ++v;
  if (v > kMax) return std::nullopt;
  return static_cast<Micros>(v);
}

}  // namespace

nlohmann::json decision_to_json(const Decision& decision, const Request& request) {
  return decision_json(decision, [&request](std::uint32_t i) {
    json d = json::array();
    if (i < request.descriptors.size()) {
      for (const DescriptorEntry& e : request.descriptors[i].entries)
        d.push_back(entry_json(e.key, e.value));
    }
    return d;
  });
}

nlohmann::json decision_to_json(const Decision& decision, const PathRequest& request) {
  return decision_json(decision, [&request](std::uint32_t i) {
    json d = json::array();
    d.push_back(entry_json("path", request.path));
    if (i < request.data.size())
      d.push_back(entry_json(request.data[i].first, request.data[i].second));
    return d;
  });
}

nlohmann::json decision_to_json(const Decision& decision, const AnyRequest& request) {
  return std::visit([&decision](const auto& r) { return decision_to_json(decision, r); }, request);
}

void append_decision_json(std::string& out, const Decision& decision, const Request& request) {
  append_decision(out, decision, [&out, &request](std::uint32_t i) {
    if (i >= request.descriptors.size()) return;
    bool first = true;
    for (const DescriptorEntry& e : request.descriptors[i].entries) {
      if (!first) out += ',';
      first = false;
      append_entry(out, e.key, e.value);
    }
  });
}

void append_decision_json(std::string& out, const Decision& decision, const PathRequest& request) {
  append_decision(out, decision, [&out, &request](std::uint32_t i) {
    append_entry(out, "path", request.path);
    if (i < request.data.size()) {
      out += ',';
      append_entry(out, request.data[i].first, request.data[i].second);
    }
  });
}

void append_decision_json(std::string& out, const Decision& decision, const AnyRequest& request) {
  std::visit([&out, &decision](const auto& r) { append_decision_json(out, decision, r); }, request);
}

std::string dump_json(const nlohmann::json& value) {
  try {
    return value.dump(-1, ' ', false, json::error_handler_t::replace);
  } catch (...) {  // only std::bad_alloc remains possible
    return "{\"error\":\"cannot render JSON\"}";
  }
}

std::optional<AnyRequest> parse_request_json(const nlohmann::json& body, std::string& error) {
  try {
    if (!body.is_object()) {
      error = std::string("request: expected a JSON object, got ") + type_name(body);
      return std::nullopt;
    }
    const bool envoy = body.contains("domain") || body.contains("descriptors");
    const bool path = body.contains("path") || body.contains("data");
    if (envoy && path) {
      error =
          "request: give either \"domain\" and \"descriptors\" or \"path\" and \"data\", not both";
      return std::nullopt;
    }
    if (path) return parse_path(body, error);
    if (envoy) return parse_envoy(body, error);
    error = "request: expected \"domain\" and \"descriptors\", or \"path\" and \"data\"";
    return std::nullopt;
  } catch (const std::exception& e) {
    error = std::string("request: ") + e.what();
    return std::nullopt;
  }
}

std::optional<AnyRequest> parse_request_json_direct(std::string_view text) {
  return DirectReader(text).read();
}

std::optional<TraceLine> parse_trace_line(std::string_view line, std::string& error) {
  try {
    json body;
    TraceSax sax(body);
    const bool parsed = json::sax_parse(line.begin(), line.end(), &sax);
    if (!parsed) {
      error = sax.message().empty() ? "invalid JSON" : sax.message();
      return std::nullopt;
    }
    if (!body.is_object()) {
      error = std::string("trace line: expected a JSON object, got ") + type_name(body);
      return std::nullopt;
    }
    const auto t = body.find("t");
    if (t == body.end()) {
      error = "t: missing (seconds since the epoch)";
      return std::nullopt;
    }
    if (!t->is_number()) {
      error = expected("t", "a number (seconds since the epoch)", *t);
      return std::nullopt;
    }
    const std::optional<Micros> micros =
        sax.t_text() ? seconds_text_to_micros(*sax.t_text()) : std::nullopt;
    if (!micros) {
      error = "t: must be a non-negative number of seconds since the epoch, at most 9.2e12, got " +
              t->dump();
      return std::nullopt;
    }
    body.erase(t);
    std::optional<AnyRequest> request = parse_request_json(body, error);
    if (!request) return std::nullopt;
    return TraceLine{*micros, std::move(*request)};
  } catch (const std::exception& e) {
    error = std::string("trace line: ") + e.what();
    return std::nullopt;
  }
}

}  // namespace sluice
