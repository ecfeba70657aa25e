// Rules the server tests decide against: the Envoy tree of the core's Limiter tests, in YAML.
#pragma once

namespace sluice::testing {

inline constexpr const char* kEnvoyRules = R"(domain: test
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit: {unit: second, requests_per_unit: 5}
  - key: key2
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: key2
    value: value2
    rate_limit: {unit: minute, requests_per_unit: 30}
  - key: key3
    value: "foo*"
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: key3
    value: "*bar*"
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: key4
    rate_limit: {unlimited: true}
  - key: key5
    value: v
    shadow_mode: true
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: key6
    value: a
    rate_limit: {name: a, replaces: [{name: b}], unit: second, requests_per_unit: 10}
  - key: key7
    value: b
    rate_limit: {name: b, unit: second, requests_per_unit: 1}
)";

// The same domain with key2=value2 down to 1 per minute.
inline constexpr const char* kEnvoyRulesTight = R"(domain: test
descriptors:
  - key: key2
    value: value2
    rate_limit: {unit: minute, requests_per_unit: 1}
)";

inline constexpr const char* kEnvoyRulesOther = R"(domain: other
descriptors:
  - key: k
    rate_limit: {unit: minute, requests_per_unit: 2}
)";

inline constexpr const char* kEnvoyRulesOtherJson =
    R"({"domain": "other", "descriptors": [{"key": "k", "rate_limit": {"unit": "minute", "requests_per_unit": 2}}]})";

inline constexpr const char* kPathRules = R"(rules:
  - path: /login
    descriptors:
      - key: user_id
        unit: minute
        requests_per_unit: 3
  - path: /api/*
    descriptors:
      - key: client_ip
        unit: minute
        requests_per_unit: 4
)";

}  // namespace sluice::testing
