#include "server/convert.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace sluice::server {

namespace {

constexpr std::uint32_t kMaxU32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::int64_t kMaxDurationSeconds = 315'576'000'000;  // google.protobuf.Duration's bound

std::uint32_t clamp_u32(std::uint64_t v) {
  return v > kMaxU32 ? kMaxU32 : static_cast<std::uint32_t>(v);
}

// more_constraining() orders two statuses of one descriptor: an enforced denial beats
// everything, a longer wait beats a shorter one, then fewer remaining wins.
bool more_constraining(const DescriptorStatus& a, const DescriptorStatus& b) {
  const bool a_denies = !a.allowed && !a.shadow;
  const bool b_denies = !b.allowed && !b.shadow;
  if (a_denies != b_denies) return a_denies;
  if (a_denies) return a.retry_after > b.retry_after;
  if (a.unlimited != b.unlimited) return b.unlimited;
  return a.remaining < b.remaining;
}

}  // namespace

const DescriptorStatus* most_constraining(const Decision& decision) {
  const DescriptorStatus* best = nullptr;
  for (const DescriptorStatus& s : decision.statuses) {
    if (s.shadow || s.unlimited) continue;
    if (best == nullptr || more_constraining(s, *best)) best = &s;
  }
  return best;
}

rls::RateLimitResponse::RateLimit::Unit envoy_unit(Unit unit) {
  const int v = static_cast<int>(unit);
  if (!rls::RateLimitResponse::RateLimit::Unit_IsValid(v))
    return rls::RateLimitResponse::RateLimit::UNKNOWN;
  return static_cast<rls::RateLimitResponse::RateLimit::Unit>(v);
}

bool to_request(const rls::RateLimitRequest& in, Request& out, std::string& error) {
  if (in.domain().empty()) {
    error = "rate limit domain must not be empty";
    return false;
  }
  if (in.descriptors().empty()) {
    error = "rate limit descriptor list must not be empty";
    return false;
  }
  out.domain = in.domain();
  out.cost = in.hits_addend() == 0 ? 1 : in.hits_addend();
  out.descriptors.clear();
  out.descriptors.reserve(static_cast<std::size_t>(in.descriptors_size()));
  for (const auto& d : in.descriptors()) {
    Descriptor& desc = out.descriptors.emplace_back();
    desc.entries.reserve(static_cast<std::size_t>(d.entries_size()));
    for (const auto& e : d.entries())
      desc.entries.push_back(DescriptorEntry{e.key(), e.value()});
    if (d.has_limit()) {
      // A unit Envoy may add later is not one of ours: such an override is ignored, as an
      // UNKNOWN one is.
      const int unit = d.limit().unit();
      desc.limit = LimitOverride{d.limit().requests_per_unit(),
                                 unit >= 0 && unit <= 7 ? static_cast<Unit>(unit) : Unit::kUnknown};
    }
    if (d.has_hits_addend()) desc.cost = d.hits_addend().value();
  }
  return true;
}

void to_response(const Decision& decision, const Request& request, rls::RateLimitResponse& out) {
  out.set_overall_code(decision.allowed ? rls::RateLimitResponse::OK
                                        : rls::RateLimitResponse::OVER_LIMIT);
  const std::size_t n = request.descriptors.size();
  // The most constraining status of each descriptor (statuses come in descriptor order).
  std::vector<const DescriptorStatus*> chosen(n, nullptr);
  for (const DescriptorStatus& s : decision.statuses) {
    if (s.descriptor_index >= n) continue;
    const DescriptorStatus*& c = chosen[s.descriptor_index];
    if (c == nullptr || more_constraining(s, *c)) c = &s;
  }
  auto* statuses = out.mutable_statuses();
  statuses->Reserve(static_cast<int>(n));
  for (std::size_t i = 0; i < n; ++i) {
    rls::RateLimitResponse::DescriptorStatus* st = statuses->Add();
    const DescriptorStatus* s = chosen[i];
    st->set_code(rls::RateLimitResponse::OK);
    if (s == nullptr) continue;
    if (s->unlimited) {
      st->set_limit_remaining(kMaxU32);
      continue;
    }
    if (!s->allowed && !s->shadow) st->set_code(rls::RateLimitResponse::OVER_LIMIT);
    auto* limit = st->mutable_current_limit();
    limit->set_requests_per_unit(clamp_u32(s->spec.limit));
    limit->set_unit(envoy_unit(s->unit));
    limit->set_name(s->name);
    st->set_limit_remaining(clamp_u32(s->remaining));
    const Micros reset = std::max<Micros>(s->reset_after, 0);
    // A limit that never resets (requests_per_unit: 0) has no duration: protobuf's Duration
    // stops at 10,000 years, and its JSON form refuses more.
    if (reset == kNever || reset / 1'000'000 > kMaxDurationSeconds) continue;
    auto* d = st->mutable_duration_until_reset();
    d->set_seconds(reset / 1'000'000);
    d->set_nanos(static_cast<std::int32_t>(reset % 1'000'000) * 1000);
  }
}

}  // namespace sluice::server
