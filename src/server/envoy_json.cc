#include "server/envoy_json.h"

#include <google/protobuf/util/json_util.h>

#include <array>
#include <charconv>
#include <cstdint>
#include <limits>

#include "json/scanner.h"

namespace sluice::server {

namespace {

namespace ratelimit = envoy::extensions::common::ratelimit::v3;
using RateLimit = rls::RateLimitResponse::RateLimit;

constexpr std::uint64_t kMaxU32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t kMaxU64 = std::numeric_limits<std::uint64_t>::max();

// Enum names by value, as proto3 JSON spells them. The request's unit (envoy.type.v3) and the
// response's (RateLimitResponse.RateLimit.Unit) are numbered alike.
constexpr std::array<std::string_view, 8> kUnitNames = {"UNKNOWN", "SECOND", "MINUTE", "HOUR",
                                                        "DAY",     "MONTH",  "YEAR",   "WEEK"};
static_assert(envoy::type::v3::WEEK == 7 && envoy::type::v3::MONTH == 5 &&
              envoy::type::v3::RateLimitUnit_MAX == 7);
static_assert(RateLimit::WEEK == 7 && RateLimit::MONTH == 5 && RateLimit::Unit_MAX == 7);
constexpr std::array<std::string_view, 3> kCodeNames = {"UNKNOWN", "OK", "OVER_LIMIT"};
static_assert(rls::RateLimitResponse::OK == 1 && rls::RateLimitResponse::OVER_LIMIT == 2 &&
              rls::RateLimitResponse::Code_MAX == 2);

using json_text::utf8_tail;

// utf8_length() returns the length of the well-formed UTF-8 sequence at the start of `s`, and its
// code point in `cp`; 0 when there is none.
std::size_t utf8_length(std::string_view s, std::uint32_t& cp) {
  const auto lead = static_cast<unsigned char>(s[0]);
  unsigned char lo = 0;
  unsigned char hi = 0;
  const int tail = utf8_tail(lead, lo, hi);
  if (tail == 0 || s.size() <= static_cast<std::size_t>(tail)) return 0;
  cp = lead & (0x3Fu >> tail);
  for (int i = 1; i <= tail; ++i) {
    const auto b = static_cast<unsigned char>(s[static_cast<std::size_t>(i)]);
    if (b < lo || b > hi) return 0;
    lo = 0x80;
    hi = 0xBF;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  return static_cast<std::size_t>(tail) + 1;
}

// --- reading ----------------------------------------------------------------------------------

// Reader reads a RateLimitRequest from strict JSON of the expected shape. Every step returns
// false on anything it is not certain protobuf reads the same way; the caller then hands the
// whole body to protobuf.
class Reader : json_text::Scanner {
 public:
  using Scanner::Scanner;

  bool request(rls::RateLimitRequest& out) {
    unsigned seen = 0;
    if (!object([this, &out, &seen](std::string_view key) {
          if (key == "domain") return once(seen, 1) && quoted(*out.mutable_domain());
          if (key == "descriptors") {
            return once(seen, 2) &&
                   array([this, &out] { return descriptor(*out.add_descriptors()); });
          }
          if (key == "hitsAddend" || key == "hits_addend") {
            std::uint64_t v = 0;
            if (!once(seen, 4) || !number(kMaxU32, v)) return false;
            out.set_hits_addend(static_cast<std::uint32_t>(v));
            return true;
          }
          return false;
        })) {
      return false;
    }
    skip_space();
    return p_ == end_;
  }

 private:
  bool descriptor(ratelimit::RateLimitDescriptor& out) {
    unsigned seen = 0;
    return object([this, &out, &seen](std::string_view key) {
      if (key == "entries") {
        return once(seen, 1) && array([this, &out] { return entry(*out.add_entries()); });
      }
      if (key == "limit") return once(seen, 2) && limit(*out.mutable_limit());
      if (key == "hitsAddend" || key == "hits_addend") {
        std::uint64_t v = 0;
        if (!once(seen, 4) || !number(kMaxU64, v)) return false;
        out.mutable_hits_addend()->set_value(v);
        return true;
      }
      return false;
    });
  }

  bool entry(ratelimit::RateLimitDescriptor::Entry& out) {
    unsigned seen = 0;
    return object([this, &out, &seen](std::string_view key) {
      if (key == "key") return once(seen, 1) && quoted(*out.mutable_key());
      if (key == "value") return once(seen, 2) && quoted(*out.mutable_value());
      return false;
    });
  }

  bool limit(ratelimit::RateLimitDescriptor::RateLimitOverride& out) {
    unsigned seen = 0;
    return object([this, &out, &seen](std::string_view key) {
      if (key == "requestsPerUnit" || key == "requests_per_unit") {
        std::uint64_t v = 0;
        if (!once(seen, 1) || !number(kMaxU32, v)) return false;
        out.set_requests_per_unit(static_cast<std::uint32_t>(v));
        return true;
      }
      if (key == "unit") {
        std::string_view name;
        if (!once(seen, 2) || !plain(name)) return false;
        for (std::size_t u = 0; u < kUnitNames.size(); ++u) {
          if (name == kUnitNames[u]) {
            out.set_unit(static_cast<envoy::type::v3::RateLimitUnit>(u));
            return true;
          }
        }
        return false;  // protobuf decides: an unknown name, or "3"
      }
      return false;
    });
  }
};

// --- writing ----------------------------------------------------------------------------------

constexpr char kHex[] = "0123456789abcdef";

void append_u16_escape(std::string& out, std::uint32_t unit) {
  out += "\\u";
  out += kHex[(unit >> 12) & 0xF];
  out += kHex[(unit >> 8) & 0xF];
  out += kHex[(unit >> 4) & 0xF];
  out += kHex[unit & 0xF];
}

// protobuf_escapes() tells whether protobuf's JSON writer escapes the code point `cp` >= 0xA0
// (characters that are invisible or change the layout, escaped "to prevent security bugs in
// JavaScript"); below 0xA0 it escapes the C0 and C1 controls, DEL, `"`, `\`, `<` and `>`.
bool protobuf_escapes(std::uint32_t cp) {
  return cp == 0x00AD || (cp >= 0x0600 && cp <= 0x0603) || cp == 0x06DD || cp == 0x070F ||
         cp == 0x17B4 || cp == 0x17B5 || (cp >= 0x200B && cp <= 0x200F) ||
         (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2060 && cp <= 0x2064) ||
         (cp >= 0x206A && cp <= 0x206F) || cp == 0xFEFF || (cp >= 0xFFF9 && cp <= 0xFFFB) ||
         cp == 0xE0001 || (cp >= 0x1D173 && cp <= 0x1D17A) || (cp >= 0xE0020 && cp <= 0xE007F);
}

// append_string() appends `s` quoted as protobuf's JSON writer does, or returns false when `s` is
// not valid UTF-8 (protobuf then drops bytes in its own way, and logs).
bool append_string(std::string& out, std::string_view s) {
  out += '"';
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t plain = i;
    while (plain < s.size()) {
      const auto c = static_cast<unsigned char>(s[plain]);
      if (c < 0x20 || c >= 0x7F || c == '"' || c == '\\' || c == '<' || c == '>') break;
      ++plain;
    }
    out.append(s.data() + i, plain - i);
    i = plain;
    if (i == s.size()) break;
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default:  // other controls, DEL, < and >
          append_u16_escape(out, c);
      }
      ++i;
      continue;
    }
    std::uint32_t cp = 0;
    const std::size_t n = utf8_length(s.substr(i), cp);
    if (n == 0) return false;
    if (cp < 0xA0) {  // C1 controls
      append_u16_escape(out, cp);
    } else if (!protobuf_escapes(cp)) {
      out.append(s.data() + i, n);
    } else if (cp <= 0xFFFF) {
      append_u16_escape(out, cp);
    } else {
      append_u16_escape(out, 0xD800 + ((cp - 0x10000) >> 10));
      append_u16_escape(out, 0xDC00 + (cp & 0x3FF));
    }
    i += n;
  }
  out += '"';
  return true;
}

void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

bool has_unknown_fields(const google::protobuf::Message& m) {
  return !m.GetReflection()->GetUnknownFields(m).empty();
}

// Fields writes the members of one JSON object, with the commas between them.
class Fields {
 public:
  explicit Fields(std::string& out) : out_(out) { out_ += '{'; }
  std::string& key(std::string_view name) {
    out_ += first_ ? "\"" : ",\"";
    first_ = false;
    out_ += name;
    out_ += "\":";
    return out_;
  }
  void close() { out_ += '}'; }

 private:
  std::string& out_;
  bool first_ = true;
};

// append_duration() renders a google.protobuf.Duration as protobuf does ("1s", "0.500s",
// "1.000001s", "0.000000001s"): false for the negative or out-of-range ones.
bool append_duration(std::string& out, const google::protobuf::Duration& d) {
  constexpr std::int64_t kMaxSeconds = 315'576'000'000;  // protobuf's limit: 10000 years
  if (has_unknown_fields(d) || d.seconds() < 0 || d.seconds() > kMaxSeconds || d.nanos() < 0 ||
      d.nanos() > 999'999'999) {
    return false;
  }
  out += '"';
  append_uint(out, static_cast<std::uint64_t>(d.seconds()));
  auto nanos = static_cast<std::uint32_t>(d.nanos());
  if (nanos != 0) {
    int digits = 9;
    if (nanos % 1'000'000 == 0) {
      digits = 3;
      nanos /= 1'000'000;
    } else if (nanos % 1000 == 0) {
      digits = 6;
      nanos /= 1000;
    }
    char frac[10];
    for (int k = digits; k > 0; --k) {
      frac[k] = static_cast<char>('0' + nanos % 10);
      nanos /= 10;
    }
    frac[0] = '.';
    out.append(frac, static_cast<std::size_t>(digits) + 1);
  }
  out += "s\"";
  return true;
}

bool append_status(std::string& out, const rls::RateLimitResponse::DescriptorStatus& s) {
  if (s.has_quota() || has_unknown_fields(s)) return false;
  Fields fields(out);
  if (s.code() != 0) {
    if (s.code() < 0 || static_cast<std::size_t>(s.code()) >= kCodeNames.size()) return false;
    fields.key("code") += '"';
    out += kCodeNames[static_cast<std::size_t>(s.code())];
    out += '"';
  }
  if (s.has_current_limit()) {
    const RateLimit& limit = s.current_limit();
    if (has_unknown_fields(limit)) return false;
    fields.key("currentLimit");
    Fields l(out);
    if (limit.requests_per_unit() != 0)
      append_uint(l.key("requestsPerUnit"), limit.requests_per_unit());
    if (limit.unit() != 0) {
      if (limit.unit() < 0 || static_cast<std::size_t>(limit.unit()) >= kUnitNames.size())
        return false;
      l.key("unit") += '"';
      out += kUnitNames[static_cast<std::size_t>(limit.unit())];
      out += '"';
    }
    if (!limit.name().empty() && !append_string(l.key("name"), limit.name())) return false;
    l.close();
  }
  if (s.limit_remaining() != 0) append_uint(fields.key("limitRemaining"), s.limit_remaining());
  if (s.has_duration_until_reset() &&
      !append_duration(fields.key("durationUntilReset"), s.duration_until_reset())) {
    return false;
  }
  fields.close();
  return true;
}

// append_direct() writes what to_response() sets; false for anything else.
bool append_direct(std::string& out, const rls::RateLimitResponse& r) {
  if (r.response_headers_to_add_size() != 0 || r.request_headers_to_add_size() != 0 ||
      !r.raw_body().empty() || r.has_dynamic_metadata() || r.has_quota() || has_unknown_fields(r)) {
    return false;
  }
  Fields fields(out);
  if (r.overall_code() != 0) {
    if (r.overall_code() < 0 || static_cast<std::size_t>(r.overall_code()) >= kCodeNames.size())
      return false;
    fields.key("overallCode") += '"';
    out += kCodeNames[static_cast<std::size_t>(r.overall_code())];
    out += '"';
  }
  if (r.statuses_size() != 0) {
    fields.key("statuses") += '[';
    for (int i = 0; i < r.statuses_size(); ++i) {
      if (i != 0) out += ',';
      if (!append_status(out, r.statuses(i))) return false;
    }
    out += ']';
  }
  fields.close();
  return true;
}

}  // namespace

bool parse_envoy_json_direct(std::string_view body, rls::RateLimitRequest& out) {
  out.Clear();
  return Reader(body).request(out);
}

bool append_envoy_json_direct(std::string& out, const rls::RateLimitResponse& response) {
  return append_direct(out, response);
}

bool parse_envoy_json(std::string_view body, rls::RateLimitRequest& out, std::string& error) {
  if (parse_envoy_json_direct(body, out)) return true;
  out.Clear();
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(body.data(), body.size()), &out, options);
  if (status.ok()) return true;
  error = std::string(status.message());
  return false;
}

bool append_envoy_json(std::string& out, const rls::RateLimitResponse& response) {
  const std::size_t start = out.size();
  if (append_direct(out, response)) return true;
  out.resize(start);
  std::string text;
  if (!google::protobuf::util::MessageToJsonString(response, &text,
                                                   google::protobuf::util::JsonPrintOptions{})
           .ok()) {
    return false;
  }
  out += text;
  return true;
}

}  // namespace sluice::server
