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

// parse_request_json() reads {"domain", "descriptors": [{"entries": [{"key","value"}],
// "hits_addend"?}], "cost"?} or {"path", "data": {...}, "cost"?}. On bad input returns nullopt
// and sets `error` to a message naming the field.
std::optional<AnyRequest> parse_request_json(const nlohmann::json& body, std::string& error);

// parse_trace_line() reads one trace line: a request as above plus "t", seconds since the
// epoch (fractional, microsecond precision).
std::optional<TraceLine> parse_trace_line(std::string_view line, std::string& error);

}  // namespace sluice
