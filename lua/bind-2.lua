--[[
  bind: tie a session to its worker's subscriber connection (see includes/binding), or
  untie it. The worker binds after each connect of its subscriber (a new epoch each time:
  a reconnect is a new binding, never a continuation), and unbinds when that connection
  dropped, so that a standby cannot take its tasks over on connection evidence while it
  reconnects.

  Input:
    KEYS[1] the session key   KEYS[2] its binding key
    ARGV[1] op: 'bind' | 'unbind'
    ARGV[2] epoch: bind: must be above the recorded one; unbind: removes a binding of this
            epoch or an older one
    ARGV[3] crash grace ms (bind)
    ARGV[4] the session's liveness channel (bind)

  Output:
    { 1, runId }  bound (runId: this server's run) or unbound (runId '')
    { -14 }       session gone (expired, or revoked by a takeover)
    { -18 }       bind: the liveness channel has no subscriber on this server
    { -19, epoch } a newer binding (epoch) is recorded
    { -20, version } bind: the server cannot give the evidence (before Redis 7)

  Events: none.
]]
local rcall = redis.call
--- @include "includes/binding"

local op, epoch = ARGV[1], tonumber(ARGV[2])
local pttl = rcall('PTTL', KEYS[1])
if pttl <= 0 then return {-14} end
local cur = decodeBinding(rcall('GET', KEYS[2]))
if cur and (cur.epoch > epoch or (op == 'bind' and cur.epoch == epoch)) then
  return {-19, cur.epoch}
end
if op == 'unbind' then
  rcall('DEL', KEYS[2])
  return {1, ''}
end
local version = string.match(rcall('INFO', 'server'), 'redis_version:([%d%.]+)') or '0'
if (tonumber(string.match(version, '^(%d+)')) or 0) < 7 then return {-20, version} end
if liveSubscribers(ARGV[4]) < 1 then return {-18} end
local b = {run = serverRunId(), epoch = epoch, grace = tonumber(ARGV[3]), lostAge = 0, seenAt = 0}
rcall('SET', KEYS[2], encodeBinding(b), 'PX', pttl)
return {1, b.run}
