// sluice/decision.h — what sluice answers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sluice/algorithms.h"
#include "sluice/request.h"

namespace sluice {

// DescriptorStatus is the verdict of one limit that applied to the request.
struct DescriptorStatus {
  // The index of the descriptor in Request::descriptors, or of the data entry in
  // PathRequest::data, that this limit applied to.
  std::uint32_t descriptor_index = 0;
  // The limit's name: rate_limit.name when given, otherwise its place in the rules
  // ("domain.key_value.key" or "path:/login.user_id").
  std::string name;
  // The limit's parameters: algorithm, n per window, burst.
  LimitSpec spec;
  // The unit the window was written with (kUnknown for an explicit duration).
  Unit unit = Unit::kUnknown;
  bool allowed = true;
  // Shadow-mode limits are reported but never enforced.
  bool shadow = false;
  // An `unlimited: true` rule matched: nothing is counted.
  bool unlimited = false;
  // The store could not decide; the limit's failure_mode did.
  bool without_store = false;
  // n, or the capacity b of a token bucket.
  std::uint64_t limit = 0;
  std::uint64_t remaining = 0;
  Micros reset_after = 0;
  Micros retry_after = 0;
};

// Decision is the answer to one request.
struct Decision {
  // False when any enforced limit denied; then no limit consumed anything.
  bool allowed = true;
  // The figures of the most constraining enforced limit: the denying one with the longest
  // retry_after, otherwise the one with the fewest units remaining. All 0 when none applied.
  std::uint64_t limit = 0;
  std::uint64_t remaining = 0;
  Micros reset_after = 0;
  Micros retry_after = 0;
  // One status per limit that applied, in descriptor order.
  std::vector<DescriptorStatus> statuses;
  // Set when the store failed; each limit's failure_mode then decided.
  std::string error;
};

}  // namespace sluice
