// The Lua script that runs sluice's algorithms inside Redis (docs/algorithms.md).
#pragma once

#include <string_view>

namespace sluice::redis {

// kDecideScript decides one or more requests, each one's hits atomically, in order.
//
// KEYS: one key per hit (a string: three doubles, or msgpack for a sliding log), the requests'
//       hits one after another.
// ARGV: the expiry grace in milliseconds, then one argument per request: little-endian doubles,
//       now (microseconds since the epoch; negative: use Redis's TIME) and the number of hits m,
//       then six per hit: algorithm (0 fixed window, 1 sliding log, 2 sliding counter, 3 token
//       bucket), n, W (microseconds), burst, cost, enforce (1 or 0). Lua numbers are doubles, so
//       binary doubles carry exactly what decimal text would, and cost Redis and the script
//       less than six arguments per hit.
// Reply: R elements, one per request: {now, committed (1/0), state_1, ..., state_m}, each state
//       the hit's state *before* the request, as integers: {} for a fresh key; {last, count}
//       (fixed window); {last, previous, current} (sliding counter); {last, tat, tat_frac}
//       (token bucket); {last, t1, c1, t2, c2, ...} (sliding log, live entries oldest first).
//       A request that fails (a key of another type) answers an error reply in its place.
//
// Several requests in one call share its cost in Redis (command dispatch, the script's call,
// the reply): the Redis store sends the requests that wait while a call is out as the next
// call (src/storage/redis/redis_store.cc).
//
// The script decides whether each hit is allowed and writes the new states; the caller derives
// every reported figure from the returned state with the same step functions the memory store
// runs, so both stores report identical verdicts. Lua numbers are doubles, so the products that
// exceed 2^53 (n * W, cost * W, debt * n) use exact base-2^21 limb arithmetic.
extern const std::string_view kDecideScript;

}  // namespace sluice::redis
