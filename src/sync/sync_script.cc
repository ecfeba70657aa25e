#include "sync/sync_script.h"

#include "storage/redis/sha1.h"

namespace sluice::sync {

const std::string_view kSyncScript = R"lua(
local grace = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local share = tonumber(ARGV[3])
local out = {}
local a = 4
local function lease(ask, burst, soon)
  local g = math.min(ask, soon)
  return g + math.min(burst, math.floor((soon - g) * share + 1e-9))
end
local function put(key, value, until_us, now)
  local ttl = math.ceil((until_us - now) / 1000) + grace
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, string.format('%.17g', value), 'PX', ttl)
end
for g = 1, #KEYS, 2 do
  local algo = tonumber(ARGV[a])
  local n = tonumber(ARGV[a + 1])
  local w = tonumber(ARGV[a + 2])
  local cap = tonumber(ARGV[a + 3])
  local now = tonumber(ARGV[a + 4])
  local k = tonumber(ARGV[a + 5])
  local dprev = tonumber(ARGV[a + 6])
  local dcur = tonumber(ARGV[a + 7])
  local ask = tonumber(ARGV[a + 8])
  local burst = tonumber(ARGV[a + 9])
  a = a + 10
  -- soon: what the limit will have left at the next round (or the window's end). A lease is
  -- what was asked for, and for bursts up to as much again from this instance's share of the
  -- rest; all of it reserved, so that the leases never add up to more than `soon`.
  local soon
  local grant

  if algo == 3 then
    local t = w / n
    local full = cap * t
    local f = tonumber(redis.call('GET', KEYS[g + 1]) or now)
    if f < now then f = now end
    if dcur > 0 then
      -- Consumption reported late (decided on the local share, while others held leases) may
      -- put the bucket in debt, paid back by later refill, of at most one capacity.
      f = math.max(f, math.min(f + dcur * t, now + 2 * full))
    else
      f = math.max(now, f + dcur * t)
    end
    soon = math.min(cap, math.floor((now + interval + full - f) / t + 1e-9))
    if soon < 0 then soon = 0 end
    grant = lease(ask, burst, soon)
    f = f + grant * t
    if f > now then
      put(KEYS[g + 1], f, f, now)
    else
      redis.call('DEL', KEYS[g + 1])
    end
  else
    local cur = tonumber(redis.call('GET', KEYS[g + 1]) or '0') + dcur
    if cur < 0 then cur = 0 end
    soon = n - cur
    if algo == 2 then
      local prev = tonumber(redis.call('GET', KEYS[g]) or '0')
      if dprev ~= 0 then
        prev = prev + dprev
        if prev < 0 then prev = 0 end
        put(KEYS[g], prev, (k + 1) * w, now)
      end
      local e = now - k * w
      local e_end = math.min(w, e + interval)
      soon = n - math.ceil(prev * (w - e_end) / w - 1e-9) - cur
    end
    if soon < 0 then soon = 0 end
    grant = lease(ask, burst, soon)
    cur = cur + grant
    local horizon = (k + 1) * w
    if algo == 2 then horizon = horizon + w end
    put(KEYS[g + 1], cur, horizon, now)
  end
  out[#out + 1] = grant
  out[#out + 1] = soon - grant
end
return out
)lua";

const std::string& sync_script_sha() {
  static const std::string sha = redis::sha1_hex(kSyncScript);
  return sha;
}

}  // namespace sluice::sync
