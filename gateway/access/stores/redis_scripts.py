"""The Lua scripts the Redis store runs, and the keys they run on.

Every key of a scope shares its hash tag (``gw:{k:<key id>}:…``, ``gw:{m:<model>}:…``),
so that a script's keys are in one slot and the scripts run on Redis Cluster.

``LEASE`` admits a request that could not be admitted from a worker's leases — and, in
the same atomic step, leases the worker a slice of what the scope has left: requests,
tokens, money of the budget. A top-up is the same script without a request. ``DELTA``
applies what a worker settled since its last flush, in sums: tokens used against
reserved, requests given back, leases handed back, spend, request slots ended.
"""

from __future__ import annotations

from ..limits import Scope

COUNTER_TTL = 150  # seconds a minute's counter is kept: the current and the previous
HOLDER_TTL = 10  # seconds a worker counts as holding a scope's leases after its last lease
SLOT_TTL = 30  # seconds a leased request slot lives unless its worker keeps it
SPEND_KEEP = 3 * 86400  # seconds past its period a daily or monthly spend is kept

# KEYS: requests now, requests before, tokens now, tokens before, the parallel set, the
# spend, the holders. ARGV: 1 now, 2 previous minute's weight, 3 rpm, 4 tpm, 5 max
# parallel, 6 requests needed (1, or 0 for a top-up), 7 tokens needed, 8 request id, 9
# budget (-1: none), 10 the slot's expiry, 11 the worker, 12-14 requests, tokens and
# money wanted on lease, 15-17 the least of each worth leasing, 18 how long to keep the
# spend (0: forever), 19-20 request slots wanted on lease and the least worth it, 21 a
# leased slot's expiry, 22 the number of the worker's first new slot. A leased slot is a
# member of the parallel set like a request's, named ``<worker>:<number>``.
#
# A lease is at most a fair share of what is left: half of it, split between the
# workers that took a lease of the scope in the last HOLDER_TTL seconds. Below the least
# worth leasing (a low limit, or one nearly used up), nothing is leased: the request is
# admitted alone, exactly, as without leases.
LEASE = """
local now, weight = tonumber(ARGV[1]), tonumber(ARGV[2])
local rpm, tpm, maxpar = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local need, tokens = tonumber(ARGV[6]), tonumber(ARGV[7])
local budget = tonumber(ARGV[9])
local rc = tonumber(redis.call('GET', KEYS[1]) or '0')
local rp = tonumber(redis.call('GET', KEYS[2]) or '0')
local tc = tonumber(redis.call('GET', KEYS[3]) or '0')
local tp = tonumber(redis.call('GET', KEYS[4]) or '0')
local spent = 0
if budget >= 0 then spent = tonumber(redis.call('GET', KEYS[6]) or '0') end
local counts = {tostring(rp), tostring(rc), tostring(tp), tostring(tc), tostring(spent)}
local usedr, usedt = rp * weight + rc, tp * weight + tc
local inflight = 0
if maxpar > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  inflight = redis.call('ZCARD', KEYS[5])
end
if need > 0 then
  if rpm > 0 and usedr + need > rpm then return {'requests', counts} end
  if tpm > 0 and usedt + tokens > tpm then return {'tokens', counts} end
  if maxpar > 0 and inflight >= maxpar then return {'parallel', counts} end
  if budget >= 0 and spent >= budget then return {'budget', counts} end
end
local extrar, extrat, slice, extras = 0, 0, 0, 0
local wantr, wantt, wantm = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local wants = tonumber(ARGV[19])
if wantr > 0 or wantt > 0 or wantm > 0 or wants > 0 then
  redis.call('ZADD', KEYS[7], now, ARGV[11])
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - $HOLDER_TTL)
  redis.call('EXPIRE', KEYS[7], $COUNTER_TTL)
  local split = 2 * redis.call('ZCARD', KEYS[7])
  if rpm > 0 and wantr > 0 then
    local share = math.floor((rpm - usedr - need) / split)
    if share >= tonumber(ARGV[15]) then extrar = math.min(wantr, share) end
  end
  if tpm > 0 and wantt > 0 then
    local share = math.floor((tpm - usedt - tokens) / split)
    if share >= tonumber(ARGV[16]) then extrat = math.min(wantt, share) end
  end
  if budget >= 0 and wantm > 0 then
    local share = (budget - spent) / split
    if share >= tonumber(ARGV[17]) then slice = math.min(wantm, share) end
  end
  if maxpar > 0 and wants > 0 then
    local share = math.floor((maxpar - inflight - need) / split)
    if share >= tonumber(ARGV[20]) then extras = math.min(wants, share) end
  end
end
if need + extrar > 0 then
  redis.call('INCRBY', KEYS[1], need + extrar)
  redis.call('EXPIRE', KEYS[1], $COUNTER_TTL)
end
if tpm > 0 and tokens + extrat > 0 then
  redis.call('INCRBY', KEYS[3], tokens + extrat)
  redis.call('EXPIRE', KEYS[3], $COUNTER_TTL)
end
if need > 0 and maxpar > 0 then
  redis.call('ZADD', KEYS[5], tonumber(ARGV[10]), ARGV[8])
  redis.call('EXPIRE', KEYS[5], 1800)
end
if extras > 0 then
  local first = tonumber(ARGV[22])
  for number = first, first + extras - 1 do
    redis.call('ZADD', KEYS[5], tonumber(ARGV[21]), ARGV[11] .. ':' .. number)
  end
  redis.call('EXPIRE', KEYS[5], 1800)
end
if slice > 0 then
  redis.call('INCRBYFLOAT', KEYS[6], tostring(slice))
  local keep = tonumber(ARGV[18])
  if keep > 0 then redis.call('EXPIRE', KEYS[6], keep) end
end
return {'', counts, extrar, extrat, tostring(slice), extras}
""".replace("$COUNTER_TTL", str(COUNTER_TTL)).replace("$HOLDER_TTL", str(HOLDER_TTL))

# KEYS: requests then, tokens then, the parallel set, the spend. ARGV: 1 requests, 2
# tokens, 3 money to add (each may be negative), 4 how long to keep the spend (0:
# forever), 5… request slots that ended. Returns the spend (a worker's view of it).
# A minute's counter that expired meanwhile is not brought back by what is given back.
DELTA = """
local dr, dt, dm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if dr > 0 or (dr < 0 and redis.call('EXISTS', KEYS[1]) == 1) then
  redis.call('INCRBY', KEYS[1], dr)
  redis.call('EXPIRE', KEYS[1], $COUNTER_TTL)
end
if dt > 0 or (dt < 0 and redis.call('EXISTS', KEYS[2]) == 1) then
  redis.call('INCRBY', KEYS[2], dt)
  redis.call('EXPIRE', KEYS[2], $COUNTER_TTL)
end
if #ARGV > 4 then redis.call('ZREM', KEYS[3], unpack(ARGV, 5)) end
if dm ~= 0 then
  local spent = redis.call('INCRBYFLOAT', KEYS[4], ARGV[3])
  local keep = tonumber(ARGV[4])
  if keep > 0 then redis.call('EXPIRE', KEYS[4], keep) end
  return spent
end
return redis.call('GET', KEYS[4]) or '0'
""".replace("$COUNTER_TTL", str(COUNTER_TTL))


# Keep a worker's leased request slots: KEYS: the parallel set. ARGV: 1 their new expiry,
# 2… the slots. Returns those no longer there (expired while the worker was cut off):
# the worker must not count on them.
KEEP = """
local gone = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[1]), ARGV[i])
  else
    table.insert(gone, ARGV[i])
  end
end
redis.call('EXPIRE', KEYS[1], 1800)
return gone
"""


def base(tag: str) -> str:
    return f"gw:{{{tag}}}"


def lease_keys(scope: Scope, this_minute: int, period: str | None) -> list[str]:
    prefix = base(scope.tag)
    return [
        f"{prefix}:r:{this_minute}",
        f"{prefix}:r:{this_minute - 1}",
        f"{prefix}:t:{this_minute}",
        f"{prefix}:t:{this_minute - 1}",
        f"{prefix}:p",
        f"{prefix}:s:{period or 'none'}",
        f"{prefix}:h",
    ]


def delta_keys(tag: str, minute: int, period: str | None) -> list[str]:
    prefix = base(tag)
    return [
        f"{prefix}:r:{minute}",
        f"{prefix}:t:{minute}",
        f"{prefix}:p",
        f"{prefix}:s:{period or 'none'}",
    ]
