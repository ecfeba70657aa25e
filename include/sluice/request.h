// sluice/request.h — what a caller asks sluice to decide.
//
// Two shapes, one per rule format:
//   - Request: Envoy's ratelimit request: a domain and a list of descriptors, each a list of
//     key/value entries.
//   - PathRequest: the path-rule form: a path and a data map (user_id -> "42", ...).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sluice/clock.h"

namespace sluice {

// Unit is a rate-limit unit, numbered as Envoy's RateLimitResponse.RateLimit.Unit.
enum class Unit : std::uint8_t {
  kUnknown = 0,
  kSecond = 1,
  kMinute = 2,
  kHour = 3,
  kDay = 4,
  kMonth = 5,  // 30 days
  kYear = 6,   // 365 days
  kWeek = 7,
};

// unit_micros() returns the length of one unit in microseconds (0 for kUnknown).
Micros unit_micros(Unit u) noexcept;
// unit_name() returns the lower-case configuration spelling ("second", ...).
const char* unit_name(Unit u) noexcept;

// DescriptorEntry is one key/value pair of a descriptor.
struct DescriptorEntry {
  std::string key;
  std::string value;
  friend bool operator==(const DescriptorEntry&, const DescriptorEntry&) = default;
};

// LimitOverride replaces the configured limit of a descriptor, as Envoy's
// RateLimitDescriptor.limit does: a fixed window of requests_per_unit per unit.
struct LimitOverride {
  std::uint32_t requests_per_unit = 0;
  Unit unit = Unit::kUnknown;
};

// Descriptor is one descriptor of a Request.
struct Descriptor {
  std::vector<DescriptorEntry> entries;
  std::optional<LimitOverride> limit;
  // Per-descriptor cost (Envoy's hits_addend on the descriptor); the request's cost otherwise.
  std::optional<std::uint64_t> cost;
};

// Request is Envoy's RateLimitRequest: a domain, its descriptors and the cost of the hit.
struct Request {
  std::string domain;
  std::vector<Descriptor> descriptors;
  // Cost units this hit consumes; 0 reports without consuming.
  std::uint64_t cost = 1;
};

// PathRequest is a request against path rules: the request's path and its data.
struct PathRequest {
  std::string path;
  std::vector<std::pair<std::string, std::string>> data;
  std::uint64_t cost = 1;
};

}  // namespace sluice
