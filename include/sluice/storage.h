// sluice/storage.h — opening a store from a URL, as users of Python's `limits` know them.
//
//   memory://[?max_keys=N]
//   redis://[user:password@]host[:port][/db][?option=value&...]
//   redis+unix:///path/to/redis.sock[?db=N&option=value&...]
//   redis+cluster://[user:password@]host:port[,host:port...][?option=value&...]
//   rediss://... and rediss+cluster://...: the same over TLS (docs/storage.md, "TLS")
//
// Redis options: prefix (key prefix, default "sluice:"), connections (default 2, per node for a
// cluster), timeout_ms (command timeout, default 250), connect_timeout_ms (default 1000),
// time=redis (decide with Redis's clock), grace_ms (expiry grace, default 1000),
// over_limit_cache=on|off (default on: keys known to be over their limit are answered locally
// until they can pass again, sluice/over_limit_cache.h; off with time=redis),
// consistency=strong|eventual (for limits that name none; default strong), sync_interval_ms
// (eventual mode's rounds, default 100), local_share (eventual mode: the share of a limit an
// instance admits on its own, default 1/instances; sluice/eventual_store.h) and max_keys
// (eventual mode: the most keys decided locally, default 1000000; hits on further keys are
// decided in Redis). User and password may be percent-encoded. redis+cluster:// takes seed nodes
// (any reachable one yields the slot map; the port defaults to 6379), the same options except db (a
// cluster has only database 0), and max_redirects (MOVED/ASK/TRYAGAIN followed per decision,
// default 5). rediss:// and rediss+cluster:// take tls_ca (PEM CAs that verify the server; default
// the system's), tls_cert and tls_key (a client certificate and its key), tls_server_name (the name
// the certificate must carry and SNI; default the host) and tls_verify=off (accept any
// certificate); file paths may be percent-encoded. redis+unix:// has no TLS.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "sluice/memory_store.h"
#include "sluice/redis_cluster_store.h"
#include "sluice/redis_store.h"
#include "sluice/store.h"

namespace sluice {

// StorageConfig is a parsed storage URL.
struct StorageConfig {
  enum class Kind { kMemory, kRedis, kRedisCluster };
  Kind kind = Kind::kMemory;
  MemoryStoreOptions memory;
  RedisStoreOptions redis;  // kRedis
  // kRedisCluster: the seeds and max_redirects; cluster.node holds the Redis options.
  RedisClusterStoreOptions cluster;
};

// parse_storage_url() parses a URL; on error returns false and sets `error` to a message that
// names the part that is wrong. Never throws.
bool parse_storage_url(std::string_view url, StorageConfig& config, std::string& error);

// open_store() parses the URL and creates the store (connections are made lazily: a Redis that
// is down now is retried on use). Returns nullptr and sets `error` on a bad URL.
std::unique_ptr<Store> open_store(std::string_view url, std::string& error);

}  // namespace sluice
