// The Lua script of the eventual-consistency replicator's rounds (sluice/eventual_store.h).
#pragma once

#include <string>
#include <string_view>

namespace sluice::sync {

// kSyncScript applies a round's updates for several keys and grants their leases, atomically per
// call.
//
// KEYS: two per key: the previous window's count and the current window's count (windows), or
//       the bucket's key twice (token bucket).
// ARGV: the expiry grace in milliseconds, the sync interval I in microseconds, the instance's
//       share of a limit (1/K), then ten per key: algorithm (0 fixed window, 2 sliding counter,
//       3 token bucket), n, W (microseconds), capacity, now (microseconds), the window index k
//       of `now`, the consumption to add to window k-1 (sliding counter; negative returns unused
//       lease), the consumption to add to window k (the bucket's emitted cost), the lease asked
//       for, and the most it may get on top of it for bursts.
// Reply: two integers per key: the lease granted, and what the limit has left after it. A lease
//       is what was asked for, plus up to the burst asked for from the instance's share of the
//       rest, all of it reserved (the leases never add up to more than the limit). It is taken
//       from what the limit will have left at the next round (now + I, or the window's end): a
//       sliding counter's previous window weighs less as time passes, a bucket refills. So a
//       lease may run ahead of that release by at most one interval's worth (n * I / W); a
//       fixed window's lease never runs ahead.
//
// The state is mergeable: a window's count adds up the instances' consumption; a bucket is the
// time F at which it is full again, moved forward by W/n per emitted unit, never before now (a
// report that arrives late may put it in debt, by at most one capacity). Lua numbers are
// doubles: counts and times are exact integers below 2^53, and the sliding counter's weight is
// rounded towards admitting less.
extern const std::string_view kSyncScript;

// sync_script_sha() is the SHA-1 that names the script in EVALSHA.
const std::string& sync_script_sha();

}  // namespace sluice::sync
