// sluice/json.h — sluice's JSON shapes: the Decision everywhere sluice prints one, and the
// request lines of `sluice replay` traces (also the bodies of the HTTP API).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "sluice/decision.h"
#include "sluice/request.h"

namespace sluice {

// decision_to_json() renders a Decision:
//   {"allowed": bool, "limit": n, "remaining": n, "reset_after_ms": n, "retry_after_ms": n,
//    "statuses": [{"descriptor": [{"key": k, "value": v}...], "name": "...",
//                  "algorithm": "...", "allowed": bool, "limit": n, "remaining": n,
//                  "reset_after_ms": n, "retry_after_ms": n, "shadow": bool}]}
// Milliseconds are rounded up; a retry that can never pass is -1.
nlohmann::json decision_to_json(const Decision& decision, const Request& request);
nlohmann::json decision_to_json(const Decision& decision, const PathRequest& request);

// AnyRequest is either request shape.
using AnyRequest = std::variant<Request, PathRequest>;

// TraceLine is one line of a replay trace.
struct TraceLine {
  Micros t = 0;  // when the hit happens
  AnyRequest request;
};

// decision_to_json() for either request shape.
nlohmann::json decision_to_json(const Decision& decision, const AnyRequest& request);

// append_decision_json() appends to `out` exactly what dump_json(decision_to_json(decision,
// request)) renders, byte for byte, without building a DOM: the request path's renderer.
// Keys in sorted order (nlohmann's objects are std::maps), integers in decimal, kNever as -1,
// strings escaped as dump_json escapes them (invalid UTF-8 becomes U+FFFD). Never throws but
// std::bad_alloc.
//
// Example:
//   std::string body;
//   append_decision_json(body, decision, request);  // {"allowed":true,"limit":10,...}
void append_decision_json(std::string& out, const Decision& decision, const Request& request);
void append_decision_json(std::string& out, const Decision& decision, const PathRequest& request);
void append_decision_json(std::string& out, const Decision& decision, const AnyRequest& request);

// dump_json() renders JSON on one line. Never throws on bad UTF-8 in strings (such bytes become
// U+FFFD), so it is safe for values taken from the command line.
std::string dump_json(const nlohmann::json& value);

// parse_request_json() reads {"domain", "descriptors": [{"entries": [{"key","value"}],
// "hits_addend"?}], "cost"?} or {"path", "data": {...}, "cost"?}. On bad input returns nullopt
// and sets `error` to a message naming the field ("descriptors[0].entries[1].value: expected a
// string, got a number"). Never throws.
//
// Validation is strict: unknown fields are errors; "domain", "descriptors" (non-empty), every
// descriptor's "entries" (non-empty) and every entry's "key" (non-empty) are required; a missing
// "value" is "" (as in protobuf's JSON form). A cost is an integer 0..4294967295: "cost" or its
// Envoy spelling "hits_addend" (default 1; 0 checks without consuming). A descriptor may carry
// "hits_addend" and Envoy's override "limit": {"requests_per_unit": n, "unit": "second"}.
// "hitsAddend" and "requestsPerUnit" (protobuf's JSON names) are accepted too. Path requests:
// "path" (non-empty) is required, "data" is an object of strings.
std::optional<AnyRequest> parse_request_json(const nlohmann::json& body, std::string& error);

// parse_request_json_direct() is the fast path of request bodies: it reads the common shapes of
// parse_request_json()'s input straight from the JSON text, without a DOM. When it returns a
// request, that is exactly what parse_request_json(nlohmann::json::parse(text)) returns; on
// anything it is not sure of (a \u escape, a repeated field, any error...) it returns nullopt,
// and the caller takes the DOM path, which decides and words the error. Never throws but
// std::bad_alloc.
std::optional<AnyRequest> parse_request_json_direct(std::string_view text);

// parse_trace_line() reads one trace line: a request as above plus "t", seconds since the
// epoch (fractional, microsecond precision). "t" is converted from the number's text, exactly,
// rounded to the nearest microsecond (1700000000.000001 -> 1700000000000001). Never throws.
std::optional<TraceLine> parse_trace_line(std::string_view line, std::string& error);

}  // namespace sluice
