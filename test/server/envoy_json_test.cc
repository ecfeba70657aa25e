// parse_envoy_json() and append_envoy_json() against protobuf's own JSON transcoder: the same
// acceptance, refusal, error message, message read and text written, over hand-written cases and
// tens of thousands of random and mutated ones.
#include "server/envoy_json.h"

#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "sluice/algorithms.h"
#include "support/json_mutation.h"

namespace sluice::server {
namespace {

using google::protobuf::util::MessageDifferencer;
using testing::Rng;

std::string utf8(std::uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Code points at the edges of what protobuf's writer escapes (U+00AD, U+0600..0603, U+2028..202E,
// U+FEFF, U+E0001, the music formatting and tag characters...) and of UTF-8's lengths.
constexpr std::uint32_t kEdgeCodePoints[] = {
    0x7F,    0x80,    0x9F,    0xA0,    0xAC,    0xAD,    0xAE,    0x7FF,   0x800,
    0x5FF,   0x600,   0x603,   0x604,   0x6DC,   0x6DD,   0x6DE,   0x70E,   0x70F,
    0x710,   0x17B3,  0x17B4,  0x17B5,  0x17B6,  0x200A,  0x200B,  0x200F,  0x2010,
    0x2027,  0x2028,  0x202E,  0x202F,  0x205F,  0x2060,  0x2064,  0x2065,  0x2069,
    0x206A,  0x206F,  0x2070,  0xD7FF,  0xE000,  0xFEFE,  0xFEFF,  0xFF00,  0xFFF8,
    0xFFF9,  0xFFFB,  0xFFFC,  0xFFFF,  0x10000, 0x1D172, 0x1D173, 0x1D17A, 0x1D17B,
    0xE0000, 0xE0001, 0xE0002, 0xE001F, 0xE0020, 0xE007F, 0xE0080, 0x10FFFF};

// Byte sequences that are not UTF-8: stray continuations, bad leads, truncated sequences,
// overlong forms, surrogates, code points past U+10FFFF.
constexpr const char* kBadUtf8[] = {"\x80",
                                    "\xBF",
                                    "\xC0\x80",
                                    "\xC1\xBF",
                                    "\xC2",
                                    "\xE0\x80\x80",
                                    "\xE0\xA0",
                                    "\xED\xA0\x80",
                                    "\xF0\x80\x80\x80",
                                    "\xF0\x90\x80",
                                    "\xF4\x90\x80\x80",
                                    "\xF5\x80\x80\x80",
                                    "\xF8",
                                    "\xFE",
                                    "\xFF",
                                    "\xC3"
                                    "A"};

// random_text() returns a string of plain ASCII, escapes, controls, and code points of every
// UTF-8 length; with `bad_utf8`, sometimes bytes that are not UTF-8.
std::string random_text(Rng& rng, bool bad_utf8) {
  static const char* const kAscii[] = {"a",  "Z",  "0",    " ",    "/",    "<",    ">",
                                       "&",  "'",  "\"",   "\\",   "\b",   "\f",   "\n",
                                       "\r", "\t", "\x01", "\x1f", "\x7f", "key1", "203.0.113.9"};
  std::string s;
  const std::uint64_t pieces = rng.one_in(5) ? 0 : rng.below(7);
  for (std::uint64_t i = 0; i < pieces; ++i) {
    switch (rng.below(bad_utf8 ? 6 : 5)) {
      case 0:
      case 1:
        s += rng.pick(kAscii);
        break;
      case 2:
        s += utf8(rng.pick(kEdgeCodePoints));
        break;
      case 3: {
        std::uint32_t cp = static_cast<std::uint32_t>(rng.below(0x110000));
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
        s += utf8(cp);
        break;
      }
      case 4:
        s += static_cast<char>(rng.below(0x80));
        break;
      default:
        s += rng.one_in(2) ? std::string(rng.pick(kBadUtf8))
                           : std::string(1, static_cast<char>(0x80 + rng.below(0x80)));
    }
  }
  if (rng.one_in(10)) s += std::string(1, '\0');
  return s;
}

// --- append_envoy_json ------------------------------------------------------------------------

// same_rendering() checks append_envoy_json() against MessageToJsonString, and the fast path
// alone (when it takes the message) too. Counts the messages the fast path took in `direct`.
::testing::AssertionResult same_rendering(const rls::RateLimitResponse& r, int& direct) {
  std::string expected;
  const bool ok = google::protobuf::util::MessageToJsonString(
                      r, &expected, google::protobuf::util::JsonPrintOptions{})
                      .ok();
  std::string got = "prefix ";
  if (append_envoy_json(got, r) != ok) {
    return ::testing::AssertionFailure()
           << "protobuf " << (ok ? "renders" : "refuses") << " " << r.ShortDebugString();
  }
  if (got != (ok ? "prefix " + expected : "prefix ")) {
    return ::testing::AssertionFailure() << "got      " << got << "\nexpected prefix " << expected
                                         << "\nfor " << r.ShortDebugString();
  }
  std::string fast;
  if (append_envoy_json_direct(fast, r)) {
    ++direct;
    if (!ok || fast != expected) {
      return ::testing::AssertionFailure() << "fast path: " << fast << "\nexpected " << expected
                                           << "\nfor " << r.ShortDebugString();
    }
  }
  return ::testing::AssertionSuccess();
}

std::uint64_t random_count(Rng& rng) {
  switch (rng.below(5)) {
    case 0:
      return 0;
    case 1:
      return rng.below(100);
    case 2:
      return kMaxLimit - rng.below(2) + rng.below(2);  // around 2^32
    case 3:
      return std::numeric_limits<std::uint64_t>::max();
    default:
      return rng.next() >> rng.below(64);
  }
}

// random_reset() returns a reset time in microseconds: whole seconds, milliseconds,
// microseconds, around protobuf's limit of 315576000000 s, negative, kNever.
Micros random_reset(Rng& rng) {
  constexpr Micros kLimit = Micros{315'576'000'000} * 1'000'000;
  switch (rng.below(9)) {
    case 0:
      return 0;
    case 1:
      return static_cast<Micros>(rng.below(100)) * 1'000'000;
    case 2:
      return static_cast<Micros>(rng.below(100'000)) * 1'000;
    case 3:
      return static_cast<Micros>(rng.below(100'000'000));
    case 4:
      return kLimit - 1 + static_cast<Micros>(rng.below(3));
    case 5:
      return -static_cast<Micros>(rng.below(10'000'000));
    case 6:
      return kNever;
    case 7:
      return static_cast<Micros>(rng.below(static_cast<std::uint64_t>(kMaxWindow)));
    default:
      return static_cast<Micros>(rng.next() >> 1);
  }
}

// to_response() over random decisions: the messages the server really renders. Names are valid
// UTF-8 here (they come from rule files), so the fast path must take every message protobuf
// renders; protobuf refuses only resets beyond its 10000-year limit (kNever).
TEST(AppendEnvoyJson, SameAsProtobufForWhatToResponseProduces) {
  google::protobuf::LogSilencer quiet;
  Rng rng(7);
  constexpr int kCases = 20'000;
  int direct = 0;
  int refused = 0;
  for (int i = 0; i < kCases; ++i) {
    Request request;
    request.domain = "d";
    request.descriptors.resize(rng.below(5));
    Decision d;
    d.allowed = !rng.one_in(3);
    const std::uint64_t n = rng.below(6);
    for (std::uint64_t k = 0; k < n; ++k) {
      DescriptorStatus& s = d.statuses.emplace_back();
      s.descriptor_index = static_cast<std::uint32_t>(rng.below(request.descriptors.size() + 2));
      s.name = random_text(rng, false);
      s.spec.limit = random_count(rng);
      s.unit = static_cast<Unit>(rng.below(9));  // 8: not one of Envoy's, rendered UNKNOWN
      s.allowed = !rng.one_in(3);
      s.shadow = rng.one_in(4);
      s.unlimited = rng.one_in(6);
      s.remaining = random_count(rng);
      s.reset_after = random_reset(rng);
    }
    rls::RateLimitResponse r;
    to_response(d, request, r);
    const int before = direct;
    ASSERT_TRUE(same_rendering(r, direct)) << "case " << i;
    std::string ignored;
    if (direct == before) {
      ++refused;
      ASSERT_FALSE(google::protobuf::util::MessageToJsonString(r, &ignored, {}).ok())
          << "the fast path must take every message protobuf renders: " << r.ShortDebugString();
    }
  }
  std::printf(
      "[ stats    ] %d responses from to_response(): %d rendered directly, %d refused by "
      "protobuf (a reset beyond 10000 years)\n",
      kCases, direct, refused);
  EXPECT_GT(direct, kCases * 3 / 4);
}

rls::RateLimitResponse random_response(Rng& rng) {
  rls::RateLimitResponse r;
  if (!rng.one_in(5)) r.set_overall_code(static_cast<rls::RateLimitResponse::Code>(rng.below(3)));
  if (rng.one_in(50))
    r.set_overall_code(static_cast<rls::RateLimitResponse::Code>(3 + rng.below(5)));
  const std::uint64_t n = rng.below(5);
  for (std::uint64_t i = 0; i < n; ++i) {
    auto* s = r.add_statuses();
    if (!rng.one_in(5)) s->set_code(static_cast<rls::RateLimitResponse::Code>(rng.below(3)));
    if (rng.one_in(50)) s->set_code(static_cast<rls::RateLimitResponse::Code>(-1));
    if (!rng.one_in(4)) {
      auto* l = s->mutable_current_limit();
      if (!rng.one_in(5)) l->set_requests_per_unit(static_cast<std::uint32_t>(random_count(rng)));
      if (!rng.one_in(5))
        l->set_unit(static_cast<rls::RateLimitResponse::RateLimit::Unit>(rng.below(8)));
      if (rng.one_in(50)) l->set_unit(static_cast<rls::RateLimitResponse::RateLimit::Unit>(8));
      if (!rng.one_in(5)) l->set_name(random_text(rng, rng.one_in(4)));
    }
    if (!rng.one_in(4)) s->set_limit_remaining(static_cast<std::uint32_t>(random_count(rng)));
    if (!rng.one_in(4)) {
      auto* d = s->mutable_duration_until_reset();
      const Micros us = random_reset(rng);
      d->set_seconds(us / 1'000'000);
      d->set_nanos(static_cast<std::int32_t>(us % 1'000'000) * 1000);
      if (rng.one_in(3)) d->set_nanos(static_cast<std::int32_t>(rng.below(1'000'000'000)));
      if (rng.one_in(30)) d->set_nanos(1'000'000'000);
      if (rng.one_in(30)) d->set_seconds(-d->seconds());
    }
    if (rng.one_in(40)) s->mutable_quota()->set_requests(3);
  }
  // Fields to_response() never sets: protobuf renders those messages.
  switch (rng.below(40)) {
    case 0: {
      auto* h = r.add_response_headers_to_add();
      h->set_key("x-ratelimit");
      h->set_value(random_text(rng, false));
      break;
    }
    case 1:
      r.add_request_headers_to_add()->set_key("k");
      break;
    case 2:
      r.set_raw_body(random_text(rng, true));
      break;
    case 3:
#if defined(__SANITIZE_THREAD__)
      // Under TSan, protobuf's headers give map fields (and so google.protobuf.Struct) another
      // layout than Debian's uninstrumented libprotobuf has: no Struct here (sluice itself never
      // sets one).
      r.mutable_quota()->set_id("s");
#else
      (*r.mutable_dynamic_metadata()->mutable_fields())["a"].set_number_value(1.5);
#endif
      break;
    case 4:
      r.mutable_quota()->set_id("q");
      break;
    case 5:
      r.GetReflection()->MutableUnknownFields(&r)->AddVarint(99, 1);
      break;
    default:
      break;
  }
  return r;
}

// Random messages beyond what to_response() sets: unknown enum values, invalid UTF-8 names,
// negative or out-of-range durations, other fields: append_envoy_json() still matches protobuf
// (through it).
TEST(AppendEnvoyJson, SameAsProtobufForRandomResponses) {
  google::protobuf::LogSilencer quiet;  // protobuf logs each invalid UTF-8 string it serializes
  Rng rng(11);
  constexpr int kCases = 30'000;
  int direct = 0;
  for (int i = 0; i < kCases; ++i) {
    const rls::RateLimitResponse r = random_response(rng);
    ASSERT_TRUE(same_rendering(r, direct)) << "case " << i;
  }
  std::printf("[ stats    ] %d random responses: %d rendered directly, the rest by protobuf\n",
              kCases, direct);
  EXPECT_GT(direct, kCases / 4);
}

// Every code point, as a name: the escaping of each one.
TEST(AppendEnvoyJson, SameAsProtobufForEveryCodePoint) {
  rls::RateLimitResponse r;
  r.set_overall_code(rls::RateLimitResponse::OK);
  auto* limit = r.add_statuses()->mutable_current_limit();
  int direct = 0;
  for (std::uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    if (cp > 0x3000 && cp < 0xFE00 && cp % 61 != 0) continue;  // dull stretches: sampled
    if (cp > 0x10000 && cp < 0x1D000 && cp % 61 != 0) continue;
    if (cp > 0x1D200 && cp < 0xE0000 && cp % 61 != 0) continue;
    if (cp > 0xE0100 && cp % 61 != 0) continue;
    limit->set_name("a" + utf8(cp) + "b");
    ASSERT_TRUE(same_rendering(r, direct)) << "U+" << std::hex << cp;
  }
  EXPECT_GT(direct, 0);
}

TEST(AppendEnvoyJson, KnownRenderings) {
  rls::RateLimitResponse r;
  std::string out;
  ASSERT_TRUE(append_envoy_json(out, r));
  EXPECT_EQ(out, "{}");
  r.set_overall_code(rls::RateLimitResponse::OVER_LIMIT);
  r.add_statuses()->set_code(rls::RateLimitResponse::OK);
  auto* s = r.add_statuses();
  s->set_code(rls::RateLimitResponse::OVER_LIMIT);
  s->mutable_current_limit()->set_requests_per_unit(5);
  s->mutable_current_limit()->set_unit(rls::RateLimitResponse::RateLimit::SECOND);
  s->mutable_current_limit()->set_name("test.key1_value1 <\xE2\x80\xA8>");
  s->mutable_duration_until_reset()->set_seconds(1);
  s->mutable_duration_until_reset()->set_nanos(500'000'000);
  out.clear();
  ASSERT_TRUE(append_envoy_json_direct(out, r));
  EXPECT_EQ(out, R"({"overallCode":"OVER_LIMIT","statuses":[{"code":"OK"},{"code":"OVER_LIMIT",)"
                 R"("currentLimit":{"requestsPerUnit":5,"unit":"SECOND","name":"test.key1_value1 )"
                 R"(\u003c\u2028\u003e"},"durationUntilReset":"1.500s"}]})");
  for (const auto& [nanos, text] :
       std::vector<std::pair<int, std::string>>{{0, "\"0s\""},
                                                {602'563'000, "\"0.602563s\""},
                                                {1, "\"0.000000001s\""},
                                                {10'000'000, "\"0.010s\""}}) {
    s->mutable_duration_until_reset()->set_seconds(0);
    s->mutable_duration_until_reset()->set_nanos(nanos);
    out.clear();
    ASSERT_TRUE(append_envoy_json_direct(out, r));
    EXPECT_NE(out.find("\"durationUntilReset\":" + text), std::string::npos) << out;
  }
  // Beyond protobuf's 10000 years: refused, `out` left as it was.
  google::protobuf::LogSilencer quiet;  // protobuf warns of the JSON it left unfinished
  s->mutable_duration_until_reset()->set_seconds(315'576'000'001);
  out = "kept";
  EXPECT_FALSE(append_envoy_json(out, r));
  EXPECT_EQ(out, "kept");
}

// --- parse_envoy_json -------------------------------------------------------------------------

// same_parse() checks parse_envoy_json() against JsonStringToMessage (ignore_unknown_fields off):
// the same acceptance, message, or error message; and the fast path alone, when it takes the
// body, must read what protobuf reads. Counts the bodies the fast path took in `direct`.
::testing::AssertionResult same_parse(const std::string& body, int& direct, int& accepted) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  rls::RateLimitRequest expected;
  const auto status = google::protobuf::util::JsonStringToMessage(body, &expected, options);
  rls::RateLimitRequest got;
  got.set_domain("stale");  // must not leak into the result
  got.add_descriptors();
  std::string error;
  const bool ok = parse_envoy_json(body, got, error);
  if (ok != status.ok()) {
    return ::testing::AssertionFailure()
           << "protobuf " << (status.ok() ? "accepts" : "refuses (" + status.ToString() + ")")
           << " " << ::testing::PrintToString(body) << "; parse_envoy_json: " << error;
  }
  if (ok && !MessageDifferencer::Equals(got, expected)) {
    return ::testing::AssertionFailure()
           << ::testing::PrintToString(body) << "\ngot      " << got.ShortDebugString()
           << "\nexpected " << expected.ShortDebugString();
  }
  if (!ok && error != status.message()) {
    return ::testing::AssertionFailure() << ::testing::PrintToString(body) << "\ngot error "
                                         << error << "\nexpected  " << status.message();
  }
  accepted += ok;
  rls::RateLimitRequest fast;
  fast.set_domain("stale");
  if (parse_envoy_json_direct(body, fast)) {
    ++direct;
    if (!status.ok() || !MessageDifferencer::Equals(fast, expected)) {
      return ::testing::AssertionFailure()
             << "fast path took " << ::testing::PrintToString(body) << " as "
             << fast.ShortDebugString() << "; protobuf: " << status.ToString() << " "
             << expected.ShortDebugString();
    }
  }
  return ::testing::AssertionSuccess();
}

constexpr const char* kEnvoyBody =
    R"({"domain": "edge_proxy", "descriptors": [{"entries": [{"key": "remote_address", "value": "203.0.113.9"}]}]})";

const char* const kHandWritten[] = {
    kEnvoyBody,
    R"({"domain":"a"})",
    R"({})",
    R"( {"domain":"a"} )",
    "\n\t{\r\n\"domain\" :\t\"a\" }\n",
    R"({"domain":"a","descriptors":[]})",
    R"({"domain":"a","descriptors":[{}]})",
    R"({"domain":"a","descriptors":[{"entries":[]}]})",
    R"({"domain":"a","descriptors":[{"entries":[{}]}]})",
    R"({"domain":"api","descriptors":[{"entries":[{"key":"user","value":"bob"},{"key":"path"}],"hitsAddend":0,"limit":{"requestsPerUnit":7,"unit":"MINUTE"}}],"hitsAddend":3})",
    R"({"domain":"api","descriptors":[{"entries":[{"key":"user","value":"bob"}],"hits_addend":5,"limit":{"requests_per_unit":7,"unit":"WEEK"}}],"hits_addend":3})",
    R"({"descriptors":[{"limit":{}}]})",
    R"({"descriptors":[{"limit":{"unit":"UNKNOWN"}}]})",
    R"({"descriptors":[{"hitsAddend":18446744073709551615}]})",
    R"({"descriptors":[{"hitsAddend":18446744073709551616}]})",
    R"({"descriptors":[{"hitsAddend":9007199254740993}]})",
    R"({"descriptors":[{"hitsAddend":0}]})",
    R"({"hitsAddend":4294967295})",
    R"({"hitsAddend":4294967296})",
    R"({"hitsAddend":0})",
    R"({"domain":"a\"b\\c\/d\b\f\n\r\t"})",
    "{\"domain\":\"caf\xC3\xA9 \xF0\x9F\x98\x80 \xEF\xBF\xBF \xF4\x8F\xBF\xBF\"}",
    // Valid for protobuf, not for the fast path.
    R"({"domain":"a","domain":"b"})",
    R"({"domain":"a","hitsAddend":1,"hits_addend":2})",
    R"({"descriptors":[{"entries":[{"key":"k"}]}],"descriptors":[{"entries":[{"key":"j"}]}]})",
    R"({"descriptors":[{"limit":{"unit":"SECOND"},"limit":{"requestsPerUnit":1}}]})",
    R"({"descriptors":[{"entries":[{"key":"a","key":"c"}]}]})",
    R"({domain:"a"})",
    R"({'domain':'a'})",
    R"({"domain":null})",
    R"({"descriptors":null})",
    R"({"descriptors":[null]})",
    R"({"hitsAddend":null})",
    R"({"descriptors":[{"hitsAddend":null}]})",
    R"({"descriptors":[{"limit":null}]})",
    R"({"hitsAddend":"5"})",
    R"({"hitsAddend":5.0})",
    R"({"hitsAddend":5e0})",
    R"({"hitsAddend":1E2})",
    R"({"hitsAddend":-0})",
    R"({"descriptors":[{"hitsAddend":-0}]})",
    R"({"descriptors":[{"hitsAddend":"18446744073709551615"}]})",
    R"({"descriptors":[{"hitsAddend":{"value":3}}]})",
    R"({"descriptors":[{"limit":{"unit":3}}]})",
    R"({"descriptors":[{"limit":{"unit":"3"}}]})",
    R"({"descriptors":[{"entries":[{"key":"a\u00e9\ud83d\ude00"}]}]})",
    "{\"domain\":\"a\tb\"}",
    "{\"domain\":\"a\x01b\"}",
    "\v{\"domain\":\"a\"}",
    "\f{\"domain\":\"a\"}",
    R"({"domain":"a",})",
    R"({"descriptors":[{"entries":[{}],}]})",
    R"({"descriptors":{}})",
    R"({"descriptors":[{"entries":{"key":"a"}}]})",
    // Refused by protobuf.
    "",
    " ",
    "[]",
    "null",
    "\"x\"",
    R"({"hitsAddend":05})",
    R"({"hitsAddend":-1})",
    R"({"hitsAddend":1.5})",
    R"({"hitsAddend":" 5"})",
    R"({"hitsAddend":true})",
    R"({"hitsAddend":Infinity})",
    R"({"hitsAddend":NaN})",
    R"({"domain":1})",
    R"({"domain":true})",
    R"({"domain":["a"]})",
    R"({"DOMAIN":"a"})",
    R"({"hitsaddend":1})",
    R"({"unknown":1})",
    R"({"descriptors":[{"limit":{"unit":"second"}}]})",
    R"({"descriptors":[{"limit":{"unit":"BOGUS"}}]})",
    R"({"descriptors":[{"entries":[{"key":"a\ud83d"}]}]})",
    R"({"descriptors":[,]})",
    R"({"domain":"a"} x)",
    R"({"domain":"a"}{})",
    R"({"domain":"a")",
    R"({"domain":"a)",
    R"({"domain")",
    "{\"domain\":\"a\"}\x00",
    "{\"domain\":\"\xFF\"}",
    "{\"domain\":\"\xC0\x80\"}",
    "{\"domain\":\"\xED\xA0\x80\"}",
    "{\"domain\":\"\xF4\x90\x80\x80\"}",
    "{\"domain\":\"\xE2\x82\"}",
};

TEST(ParseEnvoyJson, SameAsProtobufForHandWrittenCases) {
  int direct = 0;
  int accepted = 0;
  for (const char* body : kHandWritten)
    EXPECT_TRUE(same_parse(body, direct, accepted));
  EXPECT_TRUE(same_parse(std::string("{\"domain\":\"a\0b\"}", 16), direct, accepted));
  EXPECT_TRUE(same_parse(std::string("{\"domain\":\"a\"}\0", 15), direct, accepted));
}

TEST(ParseEnvoyJson, CommonShapesTakeTheFastPath) {
  rls::RateLimitRequest r;
  ASSERT_TRUE(parse_envoy_json_direct(kEnvoyBody, r));
  EXPECT_EQ(r.domain(), "edge_proxy");
  ASSERT_EQ(r.descriptors_size(), 1);
  EXPECT_EQ(r.descriptors(0).entries(0).value(), "203.0.113.9");
  EXPECT_TRUE(parse_envoy_json_direct(
      R"({"domain":"api","descriptors":[{"entries":[{"key":"user","value":"bob"}],"hits_addend":5,)"
      R"("limit":{"requests_per_unit":7,"unit":"WEEK"}}],"hitsAddend":3})",
      r));
  EXPECT_TRUE(r.descriptors(0).has_hits_addend());
  EXPECT_EQ(r.descriptors(0).limit().unit(), envoy::type::v3::WEEK);
  EXPECT_EQ(r.hits_addend(), 3u);
  // What the fast path leaves to protobuf.
  EXPECT_FALSE(parse_envoy_json_direct(R"({"domain":"a","domain":"b"})", r));
  EXPECT_FALSE(parse_envoy_json_direct(R"({"hitsAddend":"5"})", r));
  EXPECT_FALSE(parse_envoy_json_direct(R"({"descriptors":[{"limit":{"unit":3}}]})", r));
  EXPECT_FALSE(parse_envoy_json_direct(R"({"domain":null})", r));
  EXPECT_FALSE(parse_envoy_json_direct(R"({"x":1})", r));
}

TEST(ParseEnvoyJson, ErrorsAreProtobufs) {
  rls::RateLimitRequest r;
  std::string error;
  EXPECT_FALSE(parse_envoy_json(R"({"hitsAddend":-1})", r, error));
  EXPECT_EQ(error, "(hits_addend): invalid value -1 for type TYPE_UINT32");
  EXPECT_FALSE(parse_envoy_json(R"({"nope":1})", r, error));
  EXPECT_EQ(error, "nope: Cannot find field.");
}

// JsonBuilder writes random RateLimitRequest bodies: fields in any order under either name,
// random whitespace, strings with escapes and code points of every length, numbers around their
// limits; now and then a form only protobuf reads (a number as a string or with an exponent,
// null, a unit as a number, a \u escape) or refuses.
class JsonBuilder {
 public:
  explicit JsonBuilder(Rng& rng) : rng_(rng) {}

  std::string request() {
    std::vector<std::string> members;
    if (!rng_.one_in(6)) members.push_back(member("domain", string()));
    if (!rng_.one_in(6)) {
      std::vector<std::string> ds;
      const std::uint64_t n = rng_.below(4);
      for (std::uint64_t i = 0; i < n; ++i)
        ds.push_back(descriptor());
      members.push_back(member("descriptors", array(ds)));
    }
    if (rng_.one_in(3))
      members.push_back(member(rng_.one_in(2) ? "hitsAddend" : "hits_addend", number(kMaxLimit)));
    return object(members);
  }

 private:
  std::string descriptor() {
    std::vector<std::string> members;
    if (!rng_.one_in(8)) {
      std::vector<std::string> es;
      const std::uint64_t n = rng_.below(4);
      for (std::uint64_t i = 0; i < n; ++i) {
        std::vector<std::string> e;
        if (!rng_.one_in(8)) e.push_back(member("key", string()));
        if (!rng_.one_in(4)) e.push_back(member("value", string()));
        es.push_back(object(e));
      }
      members.push_back(member("entries", array(es)));
    }
    if (rng_.one_in(3)) {
      std::vector<std::string> l;
      if (!rng_.one_in(5))
        l.push_back(
            member(rng_.one_in(2) ? "requestsPerUnit" : "requests_per_unit", number(kMaxLimit)));
      if (!rng_.one_in(5)) l.push_back(member("unit", unit()));
      members.push_back(member("limit", rng_.one_in(40) ? "null" : object(l)));
    }
    if (rng_.one_in(3)) {
      members.push_back(member(rng_.one_in(2) ? "hitsAddend" : "hits_addend",
                               number(std::numeric_limits<std::uint64_t>::max())));
    }
    return object(members);
  }

  std::string space() {
    static const char* const kSpace[] = {"", "", "", "", " ", "  ", "\n", "\t", "\r\n  "};
    return rng_.one_in(200) ? (rng_.one_in(2) ? "\v" : "\f") : rng_.pick(kSpace);
  }

  std::string member(const std::string& key, const std::string& value) {
    return space() + "\"" + key + "\"" + space() + ":" + space() + value + space();
  }

  std::string object(std::vector<std::string> members) {
    for (std::size_t i = members.size(); i > 1; --i)
      std::swap(members[i - 1], members[rng_.below(i)]);
    if (rng_.one_in(40) && !members.empty()) members.push_back(members[0]);  // a duplicate
    std::string s = "{";
    for (std::size_t i = 0; i < members.size(); ++i)
      s += (i == 0 ? "" : ",") + members[i];
    return s + space() + "}";
  }

  std::string array(const std::vector<std::string>& items) {
    std::string s = "[" + space();
    for (std::size_t i = 0; i < items.size(); ++i)
      s += (i == 0 ? "" : ",") + space() + items[i];
    return s + space() + "]";
  }

  std::string number(std::uint64_t max) {
    std::uint64_t v = 0;
    switch (rng_.below(6)) {
      case 0:
        v = 0;
        break;
      case 1:
        v = rng_.below(1000);
        break;
      case 2:
        v = max - rng_.below(2);
        break;
      default:
        v = rng_.next() % (max == std::numeric_limits<std::uint64_t>::max() ? max : max + 1);
    }
    std::string s = std::to_string(v);
    switch (rng_.below(40)) {
      case 0:
        return "\"" + s + "\"";
      case 1:
        return s + ".0";
      case 2:
        return s + "e0";
      case 3:
        return "-" + s;
      case 4:
        return std::to_string(max) + "0";
      case 5:
        return "null";
      default:
        return s;
    }
  }

  std::string unit() {
    static const char* const kUnits[] = {"UNKNOWN", "SECOND", "MINUTE", "HOUR",
                                         "DAY",     "MONTH",  "YEAR",   "WEEK"};
    switch (rng_.below(30)) {
      case 0:
        return std::to_string(rng_.below(9));
      case 1:
        return "\"second\"";
      case 2:
        return "\"" + std::to_string(rng_.below(9)) + "\"";
      case 3:
        return "null";
      default:
        return std::string("\"") + rng_.pick(kUnits) + "\"";
    }
  }

  // string() writes a JSON string: mostly what Envoy sends, with escapes and non-ASCII text.
  std::string string() {
    static const char* const kEscapes[] = {"\\\"",    "\\\\",    "\\/", "\\b",     "\\f",
                                           "\\n",     "\\r",     "\\t", "\\u00e9", "\\ud83d\\ude00",
                                           "\\u0000", "\\ud800", "\\x"};
    std::string s = "\"";
    const std::uint64_t pieces = rng_.below(6);
    for (std::uint64_t i = 0; i < pieces; ++i) {
      switch (rng_.below(12)) {
        case 0:
          s += rng_.pick(kEscapes);
          break;
        case 1:
          s += utf8(rng_.pick(kEdgeCodePoints));
          break;
        case 2: {
          std::uint32_t cp = static_cast<std::uint32_t>(0x80 + rng_.below(0x110000 - 0x80));
          if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xE000;
          s += utf8(cp);
          break;
        }
        case 3:
          if (rng_.one_in(8)) s += rng_.pick(kBadUtf8);
          if (rng_.one_in(8)) s += static_cast<char>(rng_.below(0x20));  // a raw control
          break;
        default: {
          static const char* const kWords[] = {"remote_address",
                                               "203.0.113.9",
                                               "user",
                                               "a b",
                                               "edge_proxy",
                                               "x",
                                               "'",
                                               "<>",
                                               "{}",
                                               "[]",
                                               ","};
          s += rng_.pick(kWords);
        }
      }
    }
    return s + "\"";
  }

  Rng& rng_;
};

TEST(ParseEnvoyJson, SameAsProtobufForRandomBodies) {
  Rng rng(3);
  JsonBuilder builder(rng);
  constexpr int kCases = 20'000;
  int direct = 0;
  int accepted = 0;
  for (int i = 0; i < kCases; ++i)
    ASSERT_TRUE(same_parse(builder.request(), direct, accepted)) << "case " << i;
  std::printf(
      "[ stats    ] %d random bodies: %d accepted by protobuf, %d of them read by the fast "
      "path\n",
      kCases, accepted, direct);
  EXPECT_GT(direct, kCases / 3);
}

TEST(ParseEnvoyJson, SameAsProtobufForMutatedBodies) {
  Rng rng(5);
  JsonBuilder builder(rng);
  static const char* const kTokens[] = {"null",
                                        "\"5\"",
                                        "5.0",
                                        "-1",
                                        "1e2",
                                        "18446744073709551616",
                                        "4294967296",
                                        "\"x\":1,",
                                        ",",
                                        "{}",
                                        "[]",
                                        "\"\\u0000\"",
                                        "\xFF",
                                        "\"domain\":\"d\",",
                                        "true",
                                        "}",
                                        "]",
                                        "'",
                                        "//",
                                        "\"hitsAddend\":1,",
                                        "\"hits_addend\":2,",
                                        "\"unit\":\"HOUR\",",
                                        "{\"key\":\"k\"}",
                                        "0",
                                        "00",
                                        "\"",
                                        "\\",
                                        " ",
                                        "\v",
                                        "\xC3",
                                        "\xE2\x80\xA8",
                                        "\"requestsPerUnit\":7,",
                                        "\"limit\":{},",
                                        "\"entries\":[],",
                                        "\"descriptors\":[{}],"};
  constexpr int kCases = 40'000;
  int direct = 0;
  int accepted = 0;
  for (int i = 0; i < kCases; ++i) {
    std::string body = builder.request();
    const std::uint64_t edits = rng.one_in(3) ? 1 + rng.below(3) : 1;
    for (std::uint64_t e = 0; e < edits; ++e) {
      testing::mutate_json(body, rng, kTokens);
    }
    ASSERT_TRUE(same_parse(body, direct, accepted)) << "case " << i;
  }
  std::printf(
      "[ stats    ] %d mutated bodies: %d accepted by protobuf, %d of them read by the "
      "fast path\n",
      kCases, accepted, direct);
  EXPECT_GT(direct, 0);
}

}  // namespace
}  // namespace sluice::server
