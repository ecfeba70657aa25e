#include <charconv>
#include <optional>

#include "sluice/eventual_store.h"
#include "sluice/over_limit_cache.h"
#include "sluice/storage.h"

namespace sluice {

namespace {

std::optional<long long> to_int(std::string_view s, long long lo, long long hi) {
  long long v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) return std::nullopt;
  return v;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, value, 16);
    if (ec != std::errc() || end != s.data() + i + 3) return std::nullopt;
    out += static_cast<char>(value);
    i += 2;
  }
  return out;
}

// Applies one `key=value` query option to a Redis config.
bool redis_option(std::string_view key, std::string_view value, RedisStoreOptions& o,
                  std::string& error) {
  auto number = [&](long long lo, long long hi) -> std::optional<long long> {
    auto v = to_int(value, lo, hi);
    if (!v) {
      error = "storage URL: " + std::string(key) + " must be an integer from " +
              std::to_string(lo) + " to " + std::to_string(hi) + ", got '" + std::string(value) +
              "'";
    }
    return v;
  };
  if (key == "prefix") {
    o.prefix = std::string(value);
  } else if (key == "connections") {
    auto v = number(1, 64);
    if (!v) return false;
    o.connections = static_cast<std::size_t>(*v);
  } else if (key == "timeout_ms") {
    auto v = number(1, 600'000);
    if (!v) return false;
    o.command_timeout = std::chrono::milliseconds(*v);
  } else if (key == "connect_timeout_ms") {
    auto v = number(1, 600'000);
    if (!v) return false;
    o.connect_timeout = std::chrono::milliseconds(*v);
  } else if (key == "grace_ms") {
    auto v = number(0, 86'400'000);
    if (!v) return false;
    o.expiry_grace = std::chrono::milliseconds(*v);
  } else if (key == "db") {
    auto v = number(0, 1'000'000);
    if (!v) return false;
    o.database = static_cast<int>(*v);
  } else if (key == "time") {
    if (value != "redis" && value != "caller") {
      error = "storage URL: time must be 'redis' or 'caller', got '" + std::string(value) + "'";
      return false;
    }
    o.redis_time = value == "redis";
  } else if (key == "over_limit_cache") {
    if (value != "on" && value != "off") {
      error =
          "storage URL: over_limit_cache must be 'on' or 'off', got '" + std::string(value) + "'";
      return false;
    }
    o.over_limit_cache = value == "on";
  } else if (key == "consistency") {
    auto c = parse_consistency(value);
    if (!c) {
      error = "storage URL: consistency must be 'strong' or 'eventual', got '" +
              std::string(value) + "'";
      return false;
    }
    o.consistency = *c;
  } else if (key == "sync_interval_ms") {
    auto v = number(1, 60'000);
    if (!v) return false;
    o.sync_interval = std::chrono::milliseconds(*v);
  } else if (key == "tls_ca" || key == "tls_cert" || key == "tls_key" || key == "tls_server_name") {
    auto decoded = percent_decode(value);
    if (!decoded || decoded->empty()) {
      error = "storage URL: " + std::string(key) + " needs a value (percent-encoded)";
      return false;
    }
    (key == "tls_ca"     ? o.tls.ca_file
     : key == "tls_cert" ? o.tls.cert_file
     : key == "tls_key"  ? o.tls.key_file
                         : o.tls.server_name) = *decoded;
  } else if (key == "tls_verify") {
    if (value != "on" && value != "off") {
      error = "storage URL: tls_verify must be 'on' or 'off', got '" + std::string(value) + "'";
      return false;
    }
    o.tls.verify = value == "on";
  } else if (key == "local_share") {
    double share = -1;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), share);
    if (ec != std::errc() || end != value.data() + value.size() || !(share > 0 && share <= 1)) {
      error = "storage URL: local_share must be a number above 0 and at most 1, got '" +
              std::string(value) + "'";
      return false;
    }
    o.local_share = share;
  } else if (key == "max_keys") {
    auto v = number(1, 1'000'000'000);
    if (!v) return false;
    o.eventual_max_keys = static_cast<std::size_t>(*v);
  } else {
    error =
        "storage URL: unknown option '" + std::string(key) +
        "' (known: prefix, connections, timeout_ms, connect_timeout_ms, grace_ms, db, time, "
        "over_limit_cache, consistency, sync_interval_ms, local_share, max_keys, tls_ca, tls_cert, "
        "tls_key, tls_server_name, tls_verify)";
    return false;
  }
  return true;
}

// tls_options_fit() refuses tls_* options on a URL without TLS, and a client certificate
// without its key (or the other way round).
bool tls_options_fit(const RedisTlsOptions& tls, std::string& error) {
  const bool any = !tls.ca_file.empty() || !tls.cert_file.empty() || !tls.key_file.empty() ||
                   !tls.server_name.empty() || !tls.verify;
  if (!tls.enabled && any) {
    error = "storage URL: tls_* options need TLS: rediss:// or rediss+cluster://";
    return false;
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    error = "storage URL: tls_cert and tls_key go together (a client certificate and its key)";
    return false;
  }
  return true;
}

// Applies a query string to a Redis config. `cluster`, when set, also takes the cluster-only
// options (max_redirects) and refuses db.
bool parse_query(std::string_view query, RedisStoreOptions& o, std::string& error,
                 RedisClusterStoreOptions* cluster = nullptr) {
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      error = "storage URL: option '" + std::string(item) + "' needs a value (key=value)";
      return false;
    }
    const std::string_view key = item.substr(0, eq);
    const std::string_view value = item.substr(eq + 1);
    if (cluster != nullptr && key == "max_redirects") {
      auto v = to_int(value, 0, 100);
      if (!v) {
        error = "storage URL: max_redirects must be an integer from 0 to 100, got '" +
                std::string(value) + "'";
        return false;
      }
      cluster->max_redirects = static_cast<int>(*v);
      continue;
    }
    if (cluster != nullptr && key == "db") {
      error = "storage URL: redis+cluster:// takes no db (a Redis Cluster has only database 0)";
      return false;
    }
    if (!redis_option(key, value, o, error)) {
      if (cluster != nullptr && error.find("unknown option") != std::string::npos) {
        error = "storage URL: unknown option '" + std::string(key) +
                "' (known: prefix, connections, timeout_ms, connect_timeout_ms, grace_ms, time, "
                "over_limit_cache, consistency, sync_interval_ms, local_share, max_keys, tls_ca, "
                "tls_cert, tls_key, tls_server_name, tls_verify, max_redirects)";
      }
      return false;
    }
  }
  return tls_options_fit(o.tls, error);
}

// Takes `[user[:password]@]` off the front of `rest` into the config.
bool parse_userinfo(std::string_view& rest, RedisStoreOptions& o, std::string& error) {
  const std::size_t at = rest.rfind('@');
  if (at == std::string_view::npos) return true;
  const std::string_view userinfo = rest.substr(0, at);
  rest = rest.substr(at + 1);
  const std::size_t colon = userinfo.find(':');
  auto user = percent_decode(userinfo.substr(0, colon));
  auto pass = colon == std::string_view::npos ? std::optional<std::string>("")
                                              : percent_decode(userinfo.substr(colon + 1));
  if (!user || !pass) {
    error = "storage URL: bad percent-encoding in the user or password";
    return false;
  }
  if (colon == std::string_view::npos) {
    o.password = *user;  // redis://secret@host: a password alone, as redis-cli reads it
  } else {
    o.username = *user;
    o.password = *pass;
  }
  return true;
}

// Parses `host[:port]` or `[v6]:port`; `port` keeps its value when none is given.
bool parse_host_port(std::string_view host, std::string& out_host, int& port,
                     std::string_view scheme, std::string& error) {
  if (!host.empty() && host[0] == '[') {  // [::1]:6379
    const std::size_t close = host.find(']');
    if (close == std::string_view::npos) {
      error = "storage URL: unclosed '[' in the host";
      return false;
    }
    out_host = std::string(host.substr(1, close - 1));
    host = host.substr(close + 1);
    if (!host.empty() && host[0] != ':') {
      error = "storage URL: expected ':port' after the host";
      return false;
    }
    if (!host.empty()) host = host.substr(1);
    if (!host.empty()) {
      auto p = to_int(host, 1, 65535);
      if (!p) {
        error = "storage URL: the port must be from 1 to 65535";
        return false;
      }
      port = static_cast<int>(*p);
    }
    return true;
  }
  const std::size_t colon = host.rfind(':');
  if (colon != std::string_view::npos) {
    auto p = to_int(host.substr(colon + 1), 1, 65535);
    if (!p) {
      error = "storage URL: the port must be from 1 to 65535, got '" +
              std::string(host.substr(colon + 1)) + "'";
      return false;
    }
    port = static_cast<int>(*p);
    host = host.substr(0, colon);
  }
  if (host.empty()) {
    error = "storage URL: " + std::string(scheme) + ":// needs a host (" + std::string(scheme) +
            "://host:port)";
    return false;
  }
  out_host = std::string(host);
  return true;
}

// redis+cluster://[user:password@]host:port[,host:port...][?options]
bool parse_cluster_url(std::string_view rest, std::string_view query, StorageConfig& config,
                       std::string& error) {
  config.kind = StorageConfig::Kind::kRedisCluster;
  RedisClusterStoreOptions& c = config.cluster;
  if (!parse_userinfo(rest, c.node, error)) return false;
  if (rest.find('/') != std::string_view::npos) {
    error =
        "storage URL: redis+cluster:// takes no database path (a Redis Cluster has only "
        "database 0)";
    return false;
  }
  while (true) {
    const std::size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    if (item.empty()) {
      error = "storage URL: redis+cluster:// needs seed nodes, host:port separated by commas";
      return false;
    }
    std::string host;
    int port = 6379;
    if (!parse_host_port(item, host, port, "redis+cluster", error)) return false;
    c.seeds.push_back((host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                      std::to_string(port));
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  return parse_query(query, c.node, error, &c);
}

}  // namespace

bool parse_storage_url(std::string_view url, StorageConfig& config, std::string& error) {
  config = StorageConfig{};
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    error = "storage URL '" + std::string(url) +
            "': expected memory://, redis://host:port, rediss://host:port, redis+unix:///path, "
            "redis+cluster://host:port,host:port";
    return false;
  }
  const std::string_view scheme = url.substr(0, scheme_end);
  std::string_view rest = url.substr(scheme_end + 3);
  std::string_view query;
  if (const std::size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }

  if (scheme == "memory") {
    config.kind = StorageConfig::Kind::kMemory;
    if (!rest.empty()) {
      error = "storage URL: memory:// takes no host or path";
      return false;
    }
    while (!query.empty()) {
      const std::size_t amp = query.find('&');
      const std::string_view item = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      if (item.rfind("max_keys=", 0) == 0) {
        auto v = to_int(item.substr(9), 1, 1'000'000'000);
        if (!v) {
          error = "storage URL: max_keys must be an integer from 1 to 1000000000";
          return false;
        }
        config.memory.max_keys = static_cast<std::size_t>(*v);
      } else if (!item.empty()) {
        error = "storage URL: unknown memory option '" + std::string(item) + "' (known: max_keys)";
        return false;
      }
    }
    return true;
  }

  RedisStoreOptions& o = config.redis;
  config.kind = StorageConfig::Kind::kRedis;
  if (scheme == "redis+unix") {
    if (rest.empty() || rest[0] != '/') {
      error =
          "storage URL: redis+unix:// needs an absolute socket path (redis+unix:///run/redis.sock)";
      return false;
    }
    o.unix_path = std::string(rest);
    return parse_query(query, o, error);
  }
  if (scheme == "redis+cluster") return parse_cluster_url(rest, query, config, error);
  if (scheme == "rediss+cluster") {
    config.cluster.node.tls.enabled = true;
    return parse_cluster_url(rest, query, config, error);
  }
  if (scheme == "rediss") {
    o.tls.enabled = true;
  } else if (scheme != "redis") {
    error = "storage URL: unknown scheme '" + std::string(scheme) +
            "' (expected memory, redis, rediss, redis+unix, redis+cluster, rediss+cluster)";
    return false;
  }
  // [user:password@]host[:port][/db]
  if (!parse_userinfo(rest, o, error)) return false;
  if (const std::size_t slash = rest.find('/'); slash != std::string_view::npos) {
    const std::string_view db = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    if (!db.empty()) {
      auto v = to_int(db, 0, 1'000'000);
      if (!v) {
        error = "storage URL: the database must be a number, got '" + std::string(db) + "'";
        return false;
      }
      o.database = static_cast<int>(*v);
    }
  }
  if (!parse_host_port(rest, o.host, o.port, scheme, error)) return false;
  return parse_query(query, o, error);
}

namespace {

std::unique_ptr<Store> with_cache(std::unique_ptr<Store> store, const RedisStoreOptions& o) {
  if (!o.over_limit_cache || o.redis_time) return store;
  return std::make_unique<OverLimitCache>(std::move(store));
}

// A Redis store is opened as: EventualStore (limits with eventual consistency, decided here) in
// front of the over-limit cache (strong limits' denials remembered) in front of the store.
template <class Redis, class Options>
std::unique_ptr<Store> open_redis(const Options& options, const RedisStoreOptions& o,
                                  bool cluster) {
  auto redis = std::make_unique<Redis>(options);
  redis::Batcher& batcher = redis->batcher();
  EventualStoreOptions e;
  e.sync_interval = o.sync_interval;
  e.default_consistency = o.consistency;
  e.local_share = o.local_share;
  e.max_keys = o.eventual_max_keys;
  e.prefix = o.prefix;
  e.expiry_grace = o.expiry_grace;
  e.cluster = cluster;
  return std::make_unique<EventualStore>(with_cache(std::move(redis), o), batcher,
                                         SystemClock::instance(), std::move(e));
}

}  // namespace

std::unique_ptr<Store> open_store(std::string_view url, std::string& error) {
  StorageConfig config;
  if (!parse_storage_url(url, config, error)) return nullptr;
  try {
    switch (config.kind) {
      case StorageConfig::Kind::kMemory:
        return std::make_unique<MemoryStore>(config.memory);
      case StorageConfig::Kind::kRedis:
        return open_redis<RedisStore>(config.redis, config.redis, false);
      case StorageConfig::Kind::kRedisCluster:
        return open_redis<RedisClusterStore>(config.cluster, config.cluster.node, true);
    }
    error = "storage: unknown kind";
    return nullptr;
  } catch (const std::exception& e) {
    error = std::string("storage: ") + e.what();
    return nullptr;
  }
}

}  // namespace sluice
