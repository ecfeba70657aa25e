#include "server/metrics.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <utility>

namespace sluice::server {

namespace {

constexpr std::array<const char*, kApiCount> kApiNames = {"grpc", "json", "check", "authz"};
constexpr std::array<const char*, kOutcomeCount> kOutcomeNames = {"ok", "over_limit", "error"};
constexpr std::size_t kBucketCount = Metrics::kBuckets.size() + 1;  // + the +Inf bucket

std::atomic<std::uint64_t> next_registry_id{1};

const char* status_outcome(const DescriptorStatus& s) {
  if (s.unlimited) return "unlimited";
  if (s.allowed) return "ok";
  return s.shadow ? "shadow_over_limit" : "over_limit";
}

// escape_label() escapes a label value as the text format requires.
void append_label_value(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

}  // namespace

struct Metrics::Shard {
  std::mutex mu;  // taken by its own thread per record, and by a scrape
  // "domain\0rule\0outcome" -> count.
  std::unordered_map<std::string, std::uint64_t, StringHash, std::equal_to<>> decisions;
  std::array<std::array<std::uint64_t, kOutcomeCount>, kApiCount> requests{};
  std::uint64_t store_errors = 0;
  std::uint64_t failure_allow = 0;
  std::uint64_t failure_deny = 0;
  std::array<std::uint64_t, kBucketCount> latency{};
  Micros latency_sum = 0;
  std::string key;  // scratch, reused
};

Metrics::Metrics() : id_(next_registry_id.fetch_add(1)) {}
Metrics::~Metrics() = default;

Metrics::Shard& Metrics::shard() {
  // Each thread caches its shard of the registry it used last; a server has one registry, so
  // the cache almost always hits.
  thread_local std::uint64_t cached_id = 0;
  thread_local std::shared_ptr<Shard> cached;
  if (cached_id != id_ || cached == nullptr) {
    auto s = std::make_shared<Shard>();
    {
      std::lock_guard<std::mutex> lock(mu_);
      shards_.push_back(s);
    }
    cached = std::move(s);
    cached_id = id_;
  }
  return *cached;
}

void Metrics::record(Api api, std::string_view domain, const Decision& decision, Micros elapsed) {
  Shard& s = shard();
  const double seconds = static_cast<double>(elapsed) / 1e6;
  const std::size_t bucket = static_cast<std::size_t>(
      std::lower_bound(kBuckets.begin(), kBuckets.end(), seconds) - kBuckets.begin());
  std::lock_guard<std::mutex> lock(s.mu);
  for (const DescriptorStatus& st : decision.statuses) {
    s.key.assign(domain);
    s.key += '\0';
    s.key += st.name;
    s.key += '\0';
    s.key += status_outcome(st);
    auto it = s.decisions.find(std::string_view(s.key));
    if (it == s.decisions.end()) it = s.decisions.emplace(s.key, 0).first;
    ++it->second;
    if (st.without_store) ++(st.allowed ? s.failure_allow : s.failure_deny);
  }
  if (!decision.error.empty()) ++s.store_errors;
  const Outcome outcome = decision.allowed ? Outcome::kOk : Outcome::kOverLimit;
  ++s.requests[static_cast<std::size_t>(api)][static_cast<std::size_t>(outcome)];
  ++s.latency[bucket];
  s.latency_sum += elapsed;
}

void Metrics::record_error(Api api) {
  Shard& s = shard();
  std::lock_guard<std::mutex> lock(s.mu);
  ++s.requests[static_cast<std::size_t>(api)][static_cast<std::size_t>(Outcome::kError)];
}

void Metrics::set_rules(std::size_t domains, std::size_t path_rules, std::size_t limits) {
  rules_domains_.store(domains, std::memory_order_relaxed);
  rules_paths_.store(path_rules, std::memory_order_relaxed);
  rules_limits_.store(limits, std::memory_order_relaxed);
}

void Metrics::record_reload(bool ok) {
  ++(ok ? reloads_ok_ : reloads_error_);
}

std::string Metrics::render() const {
  std::map<std::string, std::uint64_t> decisions;  // sorted: stable output
  std::array<std::array<std::uint64_t, kOutcomeCount>, kApiCount> requests{};
  std::uint64_t store_errors = 0, failure_allow = 0, failure_deny = 0;
  std::array<std::uint64_t, kBucketCount> latency{};
  Micros latency_sum = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& shard : shards_) {
      std::lock_guard<std::mutex> shard_lock(shard->mu);
      for (const auto& [key, count] : shard->decisions)
        decisions[key] += count;
      for (std::size_t a = 0; a < kApiCount; ++a)
        for (std::size_t o = 0; o < kOutcomeCount; ++o)
          requests[a][o] += shard->requests[a][o];
      store_errors += shard->store_errors;
      failure_allow += shard->failure_allow;
      failure_deny += shard->failure_deny;
      for (std::size_t b = 0; b < kBucketCount; ++b)
        latency[b] += shard->latency[b];
      latency_sum += shard->latency_sum;
    }
  }

  std::string out;
  out.reserve(4096 + decisions.size() * 96);
  auto line = [&out](std::string_view text, std::uint64_t value) {
    out += text;
    out += ' ';
    out += std::to_string(value);
    out += '\n';
  };

  out += "# HELP sluice_decisions_total Limits applied, by domain, rule and outcome.\n";
  out += "# TYPE sluice_decisions_total counter\n";
  for (const auto& [key, count] : decisions) {
    const std::size_t a = key.find('\0');
    const std::size_t b = key.find('\0', a + 1);
    std::string series = "sluice_decisions_total{domain=\"";
    append_label_value(series, std::string_view(key).substr(0, a));
    series += "\",rule=\"";
    append_label_value(series, std::string_view(key).substr(a + 1, b - a - 1));
    series += "\",outcome=\"";
    series += std::string_view(key).substr(b + 1);
    series += "\"}";
    line(series, count);
  }

  out += "# HELP sluice_requests_total Requests, by API and outcome.\n";
  out += "# TYPE sluice_requests_total counter\n";
  for (std::size_t a = 0; a < kApiCount; ++a)
    for (std::size_t o = 0; o < kOutcomeCount; ++o)
      line(std::string("sluice_requests_total{api=\"") + kApiNames[a] + "\",outcome=\"" +
               kOutcomeNames[o] + "\"}",
           requests[a][o]);

  out += "# HELP sluice_store_errors_total Decisions the store could not make.\n";
  out += "# TYPE sluice_store_errors_total counter\n";
  line("sluice_store_errors_total", store_errors);

  out += "# HELP sluice_failure_mode_decisions_total Limits decided by their failure_mode.\n";
  out += "# TYPE sluice_failure_mode_decisions_total counter\n";
  line("sluice_failure_mode_decisions_total{mode=\"allow\"}", failure_allow);
  line("sluice_failure_mode_decisions_total{mode=\"deny\"}", failure_deny);

  out += "# HELP sluice_decision_duration_seconds Time to decide one request.\n";
  out += "# TYPE sluice_decision_duration_seconds histogram\n";
  std::uint64_t cumulative = 0;
  char bound[32];
  for (std::size_t b = 0; b < kBucketCount; ++b) {
    cumulative += latency[b];
    if (b < kBuckets.size()) {
      std::snprintf(bound, sizeof bound, "%g", kBuckets[b]);
    } else {
      std::snprintf(bound, sizeof bound, "+Inf");
    }
    line(std::string("sluice_decision_duration_seconds_bucket{le=\"") + bound + "\"}", cumulative);
  }
  char sum[48];
  std::snprintf(sum, sizeof sum, "%.6f", static_cast<double>(latency_sum) / 1e6);
  out += std::string("sluice_decision_duration_seconds_sum ") + sum + "\n";
  line("sluice_decision_duration_seconds_count", cumulative);

  out += "# HELP sluice_rules_loaded What the current rule snapshot holds.\n";
  out += "# TYPE sluice_rules_loaded gauge\n";
  line("sluice_rules_loaded{kind=\"domains\"}", rules_domains_.load(std::memory_order_relaxed));
  line("sluice_rules_loaded{kind=\"path_rules\"}", rules_paths_.load(std::memory_order_relaxed));
  line("sluice_rules_loaded{kind=\"limits\"}", rules_limits_.load(std::memory_order_relaxed));

  out += "# HELP sluice_rule_reloads_total Rule reloads (from files or the admin API).\n";
  out += "# TYPE sluice_rule_reloads_total counter\n";
  line("sluice_rule_reloads_total{result=\"ok\"}", reloads_ok_.load());
  line("sluice_rule_reloads_total{result=\"error\"}", reloads_error_.load());

  if (eventual_ != nullptr) {
    const EventualStoreStats sync = eventual_->stats();
    out += "# HELP sluice_sync_rounds_total Eventual consistency: sync rounds with Redis.\n";
    out += "# TYPE sluice_sync_rounds_total counter\n";
    line("sluice_sync_rounds_total{result=\"ok\"}", sync.rounds - sync.failed_rounds);
    line("sluice_sync_rounds_total{result=\"error\"}", sync.failed_rounds);
    out += "# HELP sluice_sync_keys_synced_total Eventual consistency: key updates sent.\n";
    out += "# TYPE sluice_sync_keys_synced_total counter\n";
    line("sluice_sync_keys_synced_total", sync.keys_synced);
    out += "# HELP sluice_sync_keys Eventual consistency: keys decided locally.\n";
    out += "# TYPE sluice_sync_keys gauge\n";
    line("sluice_sync_keys", sync.keys);
    out += "# HELP sluice_sync_instances Eventual consistency: instances seen sharing Redis.\n";
    out += "# TYPE sluice_sync_instances gauge\n";
    line("sluice_sync_instances", sync.instances);
  }
  return out;
}

}  // namespace sluice::server
