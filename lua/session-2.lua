--[[
  session: a worker's liveness lease. One key per session with a server-side TTL; all
  of the worker's running grants are alive exactly as long as this key is. Renewal is
  one call per worker, whatever it holds.

  Input:
    KEYS[1] the session key
    KEYS[2] its binding key (see bind-2.lua): lives and dies with the session
    ARGV[1] op: 'open' | 'renew' | 'close' | 'ttl' | 'describe'
    ARGV[2] ttl ms (open, renew)
    ARGV[3] description JSON stored as the value (open; describe: the new one, the
            session's TTL kept, e.g. when its worker pauses)

  Output:
    { 1, serverNow, pttl }   ok (open: created; renew: extended; close: deleted;
                             ttl and describe: pttl is the remaining ms)
    { -14 }   session expired (renew, close, ttl: the key is gone; a renewed session
              is never re-created, its grants may already belong to someone else)
    { -16 }   session already exists (open)
    { -17, op } unknown op

  Events: none.
]]
local rcall = redis.call
local key, op = KEYS[1], ARGV[1]
local t = rcall('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if op == 'open' then
  if not rcall('SET', key, ARGV[3], 'PX', ARGV[2], 'NX') then return {-16} end
  return {1, now, tonumber(ARGV[2])}
elseif op == 'renew' then
  if rcall('PEXPIRE', key, ARGV[2]) == 0 then return {-14} end
  rcall('PEXPIRE', KEYS[2], ARGV[2])
  return {1, now, tonumber(ARGV[2])}
elseif op == 'close' then
  rcall('DEL', KEYS[2])
  if rcall('DEL', key) == 0 then return {-14} end
  return {1, now, 0}
elseif op == 'describe' then
  local pttl = rcall('PTTL', key)
  if pttl < 0 then return {-14} end
  rcall('SET', key, ARGV[3], 'PX', pttl)
  return {1, now, pttl}
elseif op == 'ttl' then
  local pttl = rcall('PTTL', key)
  if pttl < 0 then return {-14} end
  return {1, now, pttl}
end
return {-17, op}
