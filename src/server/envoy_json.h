// Envoy's RLS v3 messages in proto3 JSON (the body of POST /json and its answer), read and
// written without protobuf's JSON transcoder on the common shapes, and through it otherwise.
//
// google::protobuf::util::JsonStringToMessage and MessageToJsonString go through a type resolver,
// a JSON<->binary transcoder and the binary form: about 17 us a request, a hundred times the cost
// of deciding. These functions handle the shapes Envoy sends and sluice answers directly, and
// fall back to protobuf for anything else, so that what is accepted, what is refused (with which
// message), the message read and the text written are exactly protobuf's in every case.
//
// Example:
//   rls::RateLimitRequest request;
//   std::string error;
//   if (!parse_envoy_json(body, request, error)) return bad_request(error);
//   ...
//   std::string text;
//   if (!append_envoy_json(text, response)) return internal_error();
#pragma once

#include <string>
#include <string_view>

#include "server/convert.h"

namespace sluice::server {

// parse_envoy_json() reads a RateLimitRequest in proto3 JSON, as
// google::protobuf::util::JsonStringToMessage(body, &out, {.ignore_unknown_fields = false})
// does: returns true with `out` set to the same message, or false with protobuf's error message in
// `error` (and `out` unspecified).
//
// The fast path reads strict JSON objects with the fields of RateLimitRequest (domain,
// descriptors[].entries[].key/value, descriptors[].limit.requestsPerUnit/unit,
// descriptors[].hitsAddend, hitsAddend), under their lowerCamelCase or their proto names; strings
// of valid UTF-8 with no \u escapes; integers in plain decimal within range; units by name. On
// anything else (an unknown or repeated field, null, a number as a string or with a fraction or
// exponent, a unit as a number, trailing commas, bad UTF-8...) it hands the body to protobuf.
// Thread-safe.
bool parse_envoy_json(std::string_view body, rls::RateLimitRequest& out, std::string& error);

// append_envoy_json() appends `response` in proto3 JSON, exactly as
// google::protobuf::util::MessageToJsonString(response, &s, JsonPrintOptions{}) renders it.
// Returns false, leaving `out` as it was, when protobuf refuses the message (a Duration beyond
// +-10000 years, nanos out of range).
//
// Written directly for what to_response() sets: overallCode, statuses[] with code,
// currentLimit{requestsPerUnit, unit, name}, limitRemaining and durationUntilReset (fields at
// their defaults omitted, enums by name, durations with 0, 3, 6 or 9 fractional digits), with
// strings of valid UTF-8. Any other field set, an enum value without a name, a negative duration,
// a string that is not valid UTF-8 or unknown fields: rendered by protobuf. Thread-safe.
bool append_envoy_json(std::string& out, const rls::RateLimitResponse& response);

// parse_envoy_json_direct() and append_envoy_json_direct() are the two fast paths alone: false
// where parse_envoy_json() and append_envoy_json() hand the input to protobuf (then `out` is
// unspecified). For tests, which check that the fast paths really take the common shapes.
bool parse_envoy_json_direct(std::string_view body, rls::RateLimitRequest& out);
bool append_envoy_json_direct(std::string& out, const rls::RateLimitResponse& response);

}  // namespace sluice::server
