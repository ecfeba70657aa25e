#include "sluice/json.h"

namespace sluice {

nlohmann::json decision_to_json(const Decision&, const Request&) {
  return {};
}
nlohmann::json decision_to_json(const Decision&, const PathRequest&) {
  return {};
}
std::optional<AnyRequest> parse_request_json(const nlohmann::json&, std::string&) {
  return {};
}
std::optional<TraceLine> parse_trace_line(std::string_view, std::string&) {
  return {};
}

}  // namespace sluice
