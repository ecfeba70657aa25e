// describe_request(): every field of a request spelled out, to compare two requests (the JSON
// equivalence tests and the fuzz targets check that two parsers read the same request).
#pragma once

#include <string>
#include <variant>

#include "sluice/json.h"
#include "sluice/request.h"

namespace sluice::testing {

// describe_request() renders `any` with every string length-prefixed, so that two requests render
// alike exactly when every field is equal.
inline std::string describe_request(const AnyRequest& any) {
  std::string s;
  const auto str = [&s](const std::string& v) { s += std::to_string(v.size()) + ":" + v + " "; };
  if (const auto* r = std::get_if<Request>(&any)) {
    s += "envoy ";
    str(r->domain);
    s += "cost " + std::to_string(r->cost) + " [";
    for (const Descriptor& d : r->descriptors) {
      s += "{";
      for (const DescriptorEntry& e : d.entries) {
        str(e.key);
        str(e.value);
      }
      if (d.cost) s += "cost " + std::to_string(*d.cost) + " ";
      if (d.limit) {
        s += "limit " + std::to_string(d.limit->requests_per_unit) + "/" +
             std::to_string(static_cast<int>(d.limit->unit));
      }
      s += "}";
    }
    return s + "]";
  }
  const auto& p = std::get<PathRequest>(any);
  s += "path ";
  str(p.path);
  s += "cost " + std::to_string(p.cost) + " {";
  for (const auto& [k, v] : p.data) {
    str(k);
    str(v);
  }
  return s + "}";
}

}  // namespace sluice::testing
