#include "server/http_api.h"

#include <algorithm>
#include <boost/beast/core/string.hpp>
#include <chrono>
#include <cstdint>
#include <string_view>
#include <variant>

#include "server/convert.h"
#include "server/envoy_json.h"
#include "sluice/json.h"

namespace sluice::server {

namespace beast = boost::beast;

namespace {

using Clock = std::chrono::steady_clock;

Micros since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
}

HttpResponse response(http::status status, std::string body, const char* content_type) {
  HttpResponse res(status, 11);
  res.set(http::field::server, "sluice");
  res.set(http::field::content_type, content_type);
  res.body() = std::move(body);
  return res;
}

HttpResponse json_response(http::status status, const nlohmann::json& body) {
  return response(status, dump_json(body) + "\n", "application/json");
}

HttpResponse error_response(http::status status, std::string_view message) {
  return json_response(status, nlohmann::json{{"error", message}});
}

HttpResponse method_not_allowed(const char* allow) {
  HttpResponse res = error_response(http::status::method_not_allowed, "method not allowed");
  res.set(http::field::allow, allow);
  return res;
}

// seconds_up() renders microseconds as whole seconds, rounded up.
std::int64_t seconds_up(Micros us) {
  return us <= 0 ? 0 : (us + 999'999) / 1'000'000;
}

// append_sf_string() appends a structured-field string: printable ASCII, quoted, with `"` and
// `\` escaped (other bytes become '_').
void append_sf_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c >= 0x20 && c <= 0x7e) {
      out += c;
    } else {
      out += '_';
    }
  }
  out += '"';
}

std::string_view header(const HttpRequest& request, std::string_view name) {
  auto it = request.find(name);
  return it == request.end() ? std::string_view() : std::string_view(it->value());
}

// first_header() returns the value of the first of `names` present (and not empty).
std::string_view first_header(const HttpRequest& request, const std::vector<std::string>& names,
                              std::string* which = nullptr) {
  for (const std::string& name : names) {
    std::string_view v = header(request, name);
    if (!v.empty()) {
      if (which != nullptr) *which = name;
      return v;
    }
  }
  return {};
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

// JsonErrorSax reads JSON without building anything, keeping the parser's message on an error.
class JsonErrorSax final : public nlohmann::json_sax<nlohmann::json> {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    message = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 2: ..." -> from "parse".
    const std::size_t tag_end = message.find("] ");
    if (message.starts_with("[json.exception.") && tag_end != std::string::npos)
      message.erase(0, tag_end + 2);
    return false;
  }
  std::string message;
};

// json_syntax_error() says where and why `text` is not JSON, e.g. "malformed JSON: parse error
// at line 1, column 2: syntax error while parsing object key - unexpected end of input; expected
// string literal". Never throws but std::bad_alloc.
std::string json_syntax_error(std::string_view text) {
  JsonErrorSax sax;
  nlohmann::json::sax_parse(text.begin(), text.end(), &sax, nlohmann::json::input_format_t::json,
                            true);
  return sax.message.empty() ? "malformed JSON" : "malformed JSON: " + sax.message;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

}  // namespace

void add_rate_limit_headers(HttpResponse& res, const Decision& decision) {
  std::string policy;
  for (const DescriptorStatus& s : decision.statuses) {
    if (s.shadow || s.unlimited) continue;
    if (!policy.empty()) policy += ", ";
    append_sf_string(policy, s.name);
    policy += ";q=" + std::to_string(s.limit) + ";w=" + std::to_string(seconds_up(s.spec.window));
  }
  if (policy.empty()) return;
  res.set("RateLimit-Policy", policy);
  if (const DescriptorStatus* s = most_constraining(decision)) {
    std::string now;
    append_sf_string(now, s->name);
    now +=
        ";r=" + std::to_string(s->remaining) + ";t=" + std::to_string(seconds_up(s->reset_after));
    res.set("RateLimit", now);
  }
  if (!decision.allowed && decision.retry_after != kNever)
    res.set(http::field::retry_after,
            std::to_string(std::max<std::int64_t>(1, seconds_up(decision.retry_after))));
}

HttpApi::HttpApi(HttpApiOptions options, Limiter& limiter, RulesManager& rules, Metrics& metrics,
                 const std::atomic<bool>& serving)
    : options_(std::move(options)),
      limiter_(limiter),
      rules_(rules),
      metrics_(metrics),
      serving_(serving) {}

HttpResponse HttpApi::handle(HttpRequest& request) {
  std::string_view target(request.target().data(), request.target().size());
  target = target.substr(0, target.find('?'));
  const http::verb method = request.method();

  if (target == "/json") {
    if (method != http::verb::post) return method_not_allowed("POST");
    return envoy_json(request);
  }
  if (target == "/v1/check") {
    if (method != http::verb::post) return method_not_allowed("POST");
    return check(request);
  }
  if (target == "/v1/authz" || target.starts_with("/v1/authz/")) {
    return authz(request, target.substr(std::string_view("/v1/authz").size()));
  }
  if (target == "/v1/rules" || target.starts_with("/v1/rules/")) {
    HttpResponse refusal;
    if (!authorized(request, refusal)) return refusal;
    std::string_view name = target.substr(std::string_view("/v1/rules").size());
    if (!name.empty()) name.remove_prefix(1);
    return rules(request, name);
  }
  if (target == "/healthcheck") {
    if (method != http::verb::get && method != http::verb::head) return method_not_allowed("GET");
    if (!serving_.load(std::memory_order_relaxed))
      return response(http::status::service_unavailable, "shutting down\n", "text/plain");
    return response(http::status::ok, "OK\n", "text/plain");
  }
  if (target == "/metrics") {
    if (method != http::verb::get) return method_not_allowed("GET");
    return response(http::status::ok, metrics_.render(), "text/plain; version=0.0.4");
  }
  return error_response(http::status::not_found, "no such endpoint");
}

HttpResponse HttpApi::envoy_json(const HttpRequest& request) {
  rls::RateLimitRequest in;
  std::string error;
  if (!parse_envoy_json(request.body(), in, error)) {
    metrics_.record_error(Api::kJson);
    return error_response(http::status::bad_request, "invalid RateLimitRequest JSON: " + error);
  }
  Request req;
  if (!to_request(in, req, error)) {
    metrics_.record_error(Api::kJson);
    return error_response(http::status::bad_request, error);
  }
  const auto start = Clock::now();
  const Decision decision = limiter_.decide(req);
  metrics_.record(Api::kJson, req.domain, decision, since(start));
  rls::RateLimitResponse out;
  to_response(decision, req, out);
  std::string body;
  if (!append_envoy_json(body, out))
    return error_response(http::status::internal_server_error, "cannot render the response");
  body += '\n';
  return response(decision.allowed ? http::status::ok : http::status::too_many_requests,
                  std::move(body), "application/json");
}

HttpResponse HttpApi::check(const HttpRequest& request) {
  // The common bodies are read straight from the text; the DOM path reads (or refuses) the rest.
  std::optional<AnyRequest> req = parse_request_json_direct(request.body());
  if (!req) {
    nlohmann::json body = nlohmann::json::parse(request.body(), nullptr, false);
    if (body.is_discarded()) {
      metrics_.record_error(Api::kCheck);
      return error_response(http::status::bad_request, json_syntax_error(request.body()));
    }
    std::string error;
    req = parse_request_json(body, error);
    if (!req) {
      metrics_.record_error(Api::kCheck);
      return error_response(http::status::bad_request, error);
    }
  }
  const auto start = Clock::now();
  const Decision decision = std::visit([this](const auto& r) { return limiter_.decide(r); }, *req);
  const std::string_view domain = std::holds_alternative<Request>(*req)
                                      ? std::string_view(std::get<Request>(*req).domain)
                                      : std::string_view("path");
  metrics_.record(Api::kCheck, domain, decision, since(start));
  std::string text;
  append_decision_json(text, decision, *req);
  text += '\n';
  HttpResponse res = response(decision.allowed ? http::status::ok : http::status::too_many_requests,
                              std::move(text), "application/json");
  add_rate_limit_headers(res, decision);
  return res;
}

HttpResponse HttpApi::authz(const HttpRequest& request, std::string_view path_rest) {
  const AuthzOptions& o = options_.authz;
  PathRequest req;
  // The original path: a header the gateway set, or what follows /v1/authz (Envoy's ext_authz
  // appends the original path to its path_prefix). The query string is not part of it.
  std::string_view uri = first_header(request, o.uri_headers);
  if (uri.empty()) uri = path_rest;
  if (uri.empty()) {
    metrics_.record_error(Api::kAuthz);
    return error_response(http::status::bad_request,
                          "no original URI: the gateway must send X-Original-URI or "
                          "X-Forwarded-Uri, or call /v1/authz/<path>");
  }
  req.path = std::string(uri.substr(0, uri.find('?')));

  std::string which;
  std::string_view ip = first_header(request, o.ip_headers, &which);
  if (!ip.empty() && beast::iequals(which, "X-Forwarded-For")) {
    const std::size_t comma = ip.rfind(',');
    if (comma != std::string_view::npos) ip = ip.substr(comma + 1);
  }
  ip = trim(ip);
  if (!ip.empty()) req.data.emplace_back("client_ip", std::string(ip));
  std::string_view method = first_header(request, o.method_headers);
  if (method.empty()) method = std::string_view(request.method_string());
  req.data.emplace_back("method", std::string(method));
  std::string_view host = first_header(request, o.host_headers);
  if (!host.empty()) req.data.emplace_back("host", std::string(host));
  for (const auto& [key, name] : o.data_headers) {
    std::string_view v = header(request, name);
    if (!v.empty()) req.data.emplace_back(key, std::string(trim(v)));
  }

  const auto start = Clock::now();
  const Decision decision = limiter_.decide(req);
  metrics_.record(Api::kAuthz, "path", decision, since(start));
  HttpResponse res = decision.allowed ? response(http::status::ok, "", "text/plain")
                                      : response(static_cast<http::status>(o.deny_status),
                                                 "rate limited\n", "text/plain");
  add_rate_limit_headers(res, decision);
  return res;
}

bool HttpApi::authorized(const HttpRequest& request, HttpResponse& refusal) const {
  if (options_.admin_token.empty()) {
    refusal = error_response(
        http::status::forbidden,
        "the admin API is off: start sluice with --admin-token or SLUICE_ADMIN_TOKEN");
    return false;
  }
  std::string_view auth = header(request, "Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  const bool ok = auth.size() > kBearer.size() &&
                  beast::iequals(auth.substr(0, kBearer.size()), kBearer) &&
                  constant_time_equal(trim(auth.substr(kBearer.size())), options_.admin_token);
  if (ok) return true;
  refusal = error_response(http::status::unauthorized,
                           auth.empty() ? "missing bearer token" : "wrong bearer token");
  refusal.set(http::field::www_authenticate, "Bearer realm=\"sluice\"");
  return false;
}

HttpResponse HttpApi::rules(const HttpRequest& request, std::string_view name) {
  const http::verb method = request.method();
  if (name.empty()) {
    if (method != http::verb::get) return method_not_allowed("GET");
    return json_response(http::status::ok, rules_.list());
  }
  if (!RulesManager::valid_name(name))
    return error_response(http::status::bad_request,
                          "invalid rule file name: use 1-128 of A-Z a-z 0-9 _ - . (not "
                          "starting with .)");
  if (method == http::verb::get) {
    std::optional<std::string> text = rules_.get(name);
    if (!text) return error_response(http::status::not_found, "no rule file named that");
    return response(http::status::ok, std::move(*text), "application/yaml");
  }
  RulesChange change;
  if (method == http::verb::put) {
    change = rules_.put(name, request.body());
  } else if (method == http::verb::delete_) {
    change = rules_.remove(name);
  } else {
    return method_not_allowed("GET, PUT, DELETE");
  }
  nlohmann::json body{{"message", change.message}};
  if (change.status >= 400) {
    body = nlohmann::json{{"error", change.message}};
    if (!change.errors.empty()) body["errors"] = change.errors;
  } else {
    body["file"] = change.file;
    body["generation"] = change.generation;
  }
  return json_response(static_cast<http::status>(change.status), body);
}

}  // namespace sluice::server
