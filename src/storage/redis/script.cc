#include "storage/redis/script.h"

namespace sluice::redis {

const std::string_view kDecideScript = R"lua(
-- sluice: decide a request's hits atomically (see src/storage/redis/script.h).

-- Exact non-negative integers as little-endian arrays of base-2^21 limbs. Limb products stay
-- below 2^42 and every intermediate below 2^53, so doubles hold them exactly.
local B = 2097152
local function big(x)
  local r, i = {}, 1
  repeat
    local d = x % B
    r[i] = d
    i = i + 1
    x = (x - d) / B
  until x == 0
  return r
end
local function badd(a, b)
  local r, carry = {}, 0
  for i = 1, math.max(#a, #b) do
    local s = (a[i] or 0) + (b[i] or 0) + carry
    if s >= B then carry = 1; s = s - B else carry = 0 end
    r[i] = s
  end
  if carry > 0 then r[#r + 1] = carry end
  return r
end
local function bmul(a, b)
  local r = {}
  for i = 1, #a + #b do r[i] = 0 end
  for i = 1, #a do
    local carry, ai = 0, a[i]
    for j = 1, #b do
      local t = r[i + j - 1] + ai * b[j] + carry
      carry = math.floor(t / B)
      r[i + j - 1] = t - carry * B
    end
    local k = i + #b
    while carry > 0 do
      local t = r[k] + carry
      carry = math.floor(t / B)
      r[k] = t - carry * B
      k = k + 1
    end
  end
  return r
end
local function bcmp(a, b)
  for i = math.max(#a, #b), 1, -1 do
    local x, y = a[i] or 0, b[i] or 0
    if x ~= y then return x < y and -1 or 1 end
  end
  return 0
end
-- a / d and a % d for 0 < d < 2^32: the quotient as a number (callers know it is < 2^53).
local function bdivsmall(a, d)
  local q, r = 0, 0
  for i = #a, 1, -1 do
    local cur = r * B + a[i]
    local qi = math.floor(cur / d)
    r = cur - qi * d
    if r < 0 then qi = qi - 1; r = r + d elseif r >= d then qi = qi + 1; r = r - d end
    q = q * B + qi
  end
  return q, r
end
-- floor(a / b) for |a|, |b| < 2^52, b > 0, exact.
local function fdiv(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then q = q - 1 elseif r >= b then q = q + 1 end
  return q
end
local function int(x) return string.format('%d', x) end
-- Products of integers are exact in doubles below 2^53; the limbs are needed only past that.
local EXACT = 9007199254740992
-- a * b <= c * d, exactly.
local function mul_le(a, b, c, d)
  local x, y = a * b, c * d
  if x < EXACT and y < EXACT then return x <= y end
  return bcmp(bmul(big(a), big(b)), bmul(big(c), big(d))) <= 0
end

local grace = tonumber(ARGV[1])
local clock  -- Redis's TIME, read at most once per call

-- decide() decides one request: its m hits are KEYS[k0 + 1 .. k0 + m], their parameters six
-- doubles each in `args` from byte `pos`. Returns {now, committed, state before of each hit...}.
local function decide(now, k0, args, pos, m)
  if now < 0 then
    if not clock then
      local t = redis.call('TIME')
      clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    now = clock
  end

  local hits, reply, all = {}, {now, 0}, true
  for i = 1, m do
    local alg, n, w, burst, cost, enforce
    alg, n, w, burst, cost, enforce, pos = struct.unpack('<dddddd', args, pos)
    local h = {
      key = KEYS[k0 + i], alg = alg, n = n, w = w, burst = burst, cost = cost,
      enforce = enforce == 1, t = 0, ok = false, k = 0, a = 0, b = 0, live = false,
    }
    -- The state: three doubles (last, a, b), or for a sliding log a msgpack array {last, t1, c1,
    -- t2, c2, ...}. A key of another type (not sluice's) reads as fresh, and is overwritten.
    local v = redis.pcall('GET', h.key)
    local last, s2, s3, entries
    if type(v) == 'string' then
      if h.alg == 1 then
        entries = cmsgpack.unpack(v)
        last = entries[1]
      else
        last, s2, s3 = struct.unpack('<ddd', v)
      end
    end
    local pre = {}
    local t = now
    if last then
      pre[1] = last
      if last > t then t = last end  -- no time passes when the clock steps back
    end
    h.t = t
    local n, w, cost = h.n, h.w, h.cost
    if n == 0 then
      h.ok = cost == 0
    elseif h.alg == 0 then
      -- fixed window: count of window floor(t / W)
      local count = 0
      if last then
        local c = s2
        pre[2] = c
        if fdiv(last, w) == fdiv(t, w) then count = c end
      end
      h.ok = cost <= n and count <= n - cost
      h.k = fdiv(t, w)
      h.a = count + cost
    elseif h.alg == 2 then
      -- sliding window counter: prev * (W - e) + (cur + cost) * W <= n * W
      local k = fdiv(t, w)
      local e = t - k * w
      local prev, cur = 0, 0
      if last then
        local p, c = s2, s3
        pre[2], pre[3] = p, c
        local ks = fdiv(last, w)
        if ks == k then prev, cur = p, c elseif ks == k - 1 then prev = c end
      end
      if cost > n or cur > n - cost then
        h.ok = false
      elseif prev == 0 then
        h.ok = true
      else
        h.ok = mul_le(prev, w - e, n - cur - cost, w)
      end
      h.k, h.a, h.b = k, prev, cur + cost
    elseif h.alg == 3 then
      -- token bucket (GCRA): F = tat + frac / n; allow iff D + cost * W <= b * W,
      -- D = (max(F, t) - t) * n.
      local b = h.burst > 0 and h.burst or n
      local tat, frac = t, 0
      if last then
        local ta, fr = s2, s3
        pre[2], pre[3] = ta, fr
        if fr > n - 1 then fr = n - 1 end
        if ta > t or (ta == t and fr > 0) then tat, frac = ta, fr end
      end
      if cost > b then
        h.ok = false
      else
        local debt, room = (tat - t) * n + frac, (b - cost) * w
        if debt < EXACT and room < EXACT then
          h.ok = debt <= room
        else
          h.ok = bcmp(badd(bmul(big(tat - t), big(n)), big(frac)), bmul(big(b - cost), big(w))) <= 0
        end
      end
      if h.ok and cost > 0 then
        local x = frac + cost * w
        local q, r
        if x < EXACT then
          q = fdiv(x, n)
          r = x - q * n
        else
          q, r = bdivsmall(badd(big(frac), bmul(big(cost), big(w))), n)
        end
        h.a, h.b = tat + q, r
      end
    else
      -- sliding window log: the sum of accepted costs in (t - W, t]
      -- live: the entries still in the window, after a slot for the state's `last`
      local horizon, sum, live = t - w, 0, {0}
      if last then
        for j = 2, #entries, 2 do
          if entries[j] > horizon then
            live[#live + 1] = entries[j]
            live[#live + 1] = entries[j + 1]
            pre[#pre + 1] = entries[j]
            pre[#pre + 1] = entries[j + 1]
            sum = sum + entries[j + 1]
          end
        end
      end
      h.ok = cost <= n and sum <= n - cost
      h.live = live
    end
    if h.enforce and not h.ok then all = false end
    hits[i] = h
    reply[i + 2] = pre
  end

  if all then
    reply[2] = 1
    for i = 1, #hits do
      local h = hits[i]
      if h.ok and h.cost > 0 and h.n > 0 then
        local full_at, state
        if h.alg == 0 then
          full_at, state = (h.k + 1) * h.w, struct.pack('<ddd', h.t, h.a, 0)
        elseif h.alg == 2 then
          full_at, state = (h.k + 2) * h.w, struct.pack('<ddd', h.t, h.a, h.b)
        elseif h.alg == 3 then
          full_at, state = h.a, struct.pack('<ddd', h.t, h.a, h.b)
          if h.b > 0 then full_at = full_at + 1 end
        else
          local live = h.live
          if #live > 1 and live[#live - 1] == h.t then
            live[#live] = live[#live] + h.cost
          else
            live[#live + 1] = h.t
            live[#live + 1] = h.cost
          end
          live[1] = h.t
          full_at, state = h.t + h.w, cmsgpack.pack(live)
        end
        -- Forget the key once its state is full again (plus a grace for clock skew).
        local ttl = math.ceil((full_at - h.t) / 1000) + grace
        if ttl < 1 then ttl = 1 end
        redis.call('SET', h.key, state, 'PX', int(ttl))
      end
    end
  end
  return reply
end

-- The requests, each decided on its own, in order. One that fails (a key holding another type)
-- answers an error in its place and the others are unaffected.
local out, k = {}, 0
for r = 2, #ARGV do
  local args = ARGV[r]
  local now, m, pos = struct.unpack('<dd', args)
  local ok, res = pcall(decide, now, k, args, pos, m)
  if not ok then
    if type(res) == 'table' and res.err then res = res.err end
    res = {err = tostring(res)}
  end
  out[r - 1] = res
  k = k + m
end
return out
)lua";

}  // namespace sluice::redis
