// Envoy's RLS v3 messages <-> sluice's Request and Decision, shared by the gRPC service and
// the HTTP /json endpoint (which is the same messages in proto3 JSON).
#pragma once

#include <string>

#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "sluice/decision.h"
#include "sluice/request.h"

namespace sluice::server {

namespace rls = envoy::service::ratelimit::v3;

// to_request() converts an Envoy request. As Envoy's ratelimit does, an empty domain or an empty
// descriptor list is refused: returns false and sets `error`. hits_addend 0 means 1; a
// descriptor's hits_addend, when set, is that descriptor's cost (0 checks without consuming).
bool to_request(const rls::RateLimitRequest& in, Request& out, std::string& error);

// to_response() fills an Envoy response: overall_code, then one status per descriptor, in
// order. A descriptor with several limits reports its most constraining one (the denying one
// with the longest wait, otherwise the one with the fewest remaining); one with none reports OK
// and no current_limit; an unlimited one OK with limit_remaining 2^32-1; a shadow-mode limit
// that would deny reports OK, as Envoy's ratelimit does.
void to_response(const Decision& decision, const Request& request, rls::RateLimitResponse& out);

// most_constraining() returns the enforced, counted status (not shadow, not unlimited) that
// constrains the request most, or nullptr when none applied.
const DescriptorStatus* most_constraining(const Decision& decision);

// envoy_unit() maps sluice's unit to Envoy's (the numbers are the same).
rls::RateLimitResponse::RateLimit::Unit envoy_unit(Unit unit);

}  // namespace sluice::server
