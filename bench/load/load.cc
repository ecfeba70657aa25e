// load/load.cc — the descriptor values sluice-bench sends.
#include "load/load.h"

#include <array>
#include <charconv>

namespace sluice::load {
namespace {

void AppendNumber(std::string& out, std::size_t n) {
  std::array<char, 24> digits;
  const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), n).ptr;
  out.append(digits.data(), end);
}

bool Contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

bool KeyUsesAddresses(const LoadOptions& options) {
  if (!options.grpc && options.endpoint == Endpoint::kAuthz) return true;
  const std::string& k = options.key;
  return Contains(k, "address") || k == "ip" || k.ends_with("_ip") || k.starts_with("ip_");
}

void WriteKeyValue(std::string& out, std::size_t i, bool address) {
  if (!address) {
    out.push_back('k');
    AppendNumber(out, i);
    return;
  }
  // Key i is address i+1 in 10.0.0.0/8: 10.0.0.1, 10.0.0.2, ..., 10.0.1.0, ... A network
  // address (x.y.0) is a valid value for a rate limiter, so no value is skipped.
  const std::size_t a = i + 1;
  out.append("10.");
  AppendNumber(out, (a >> 16) & 0xff);
  out.push_back('.');
  AppendNumber(out, (a >> 8) & 0xff);
  out.push_back('.');
  AppendNumber(out, a & 0xff);
}

}  // namespace sluice::load
