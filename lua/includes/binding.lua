--[[
  Connection-bound sessions: the evidence that a holder's process is gone.

  A session may be bound to its worker's subscriber connection, which subscribes to the
  session's own liveness channel (<livePrefix><session>); PUBSUB NUMSUB (SHARDNUMSUB on a
  Cluster) of that channel says whether the connection still exists on this server. The binding record (key
  <bindPrefix><session>, as long-lived as the session) is one string:
    <runId>|<epoch>|<graceMs>|<lostAge>|<seenAt>
  runId    the server run on which the binding was made (INFO server): subscriptions are
           not replicated and do not survive a restart, so evidence is read only on the
           run that holds the binding; '-' once a takeover revoked the session
  epoch    the worker's count of its subscriber's connects: a reconnect is a new binding
  graceMs  the holder's crash grace: it stops believing its leases this long after its
           last proof; a takeover waits at least as long after the first sighting
  lostAge  ms the connection has been seen gone: the server time between successive
           sightings (every check of a standby, and claims), each step counted at most
           SIGHTING_STEP_MS, so that a forward step of the server's wall clock (TIME)
           shortens the wait by at most that much; a backward step counts as none
  seenAt   server ms of the latest sighting of the connection gone (0: none)
  (A record of the older four-field form <runId>|<epoch>|<graceMs>|<lostAt> reads as a
  sighting at lostAt.)
]]
-- A standby sights a gone connection every connectionCheckIntervalMs (40 ms by default):
-- steps longer than this (a stall, a clock step) count as this much only.
local SIGHTING_STEP_MS = 100
local bindRunId = nil
-- The server's run id, read once per call (INFO is allowed in scripts; CLIENT is not).
local function serverRunId()
  if not bindRunId then
    bindRunId = string.match(rcall('INFO', 'server'), 'run_id:(%x+)') or ''
  end
  return bindRunId
end

local function decodeBinding(raw)
  if not raw then return nil end
  local run, epoch, grace, age, seenAt =
    string.match(raw, '^([%x%-]+)|(%d+)|(%d+)|(%d+)|(%d+)$')
  if not run then
    run, epoch, grace, seenAt = string.match(raw, '^([%x%-]+)|(%d+)|(%d+)|(%d+)$')
    age = 0
  end
  if not run then return nil end
  return {
    run = run, epoch = tonumber(epoch), grace = tonumber(grace),
    lostAge = tonumber(age), seenAt = tonumber(seenAt),
  }
end

local function encodeBinding(b)
  return b.run .. '|' .. string.format('%d', b.epoch) .. '|' .. string.format('%d', b.grace) ..
    '|' .. string.format('%d', b.lostAge) .. '|' .. string.format('%d', b.seenAt)
end

-- How long the connection has been seen gone, were it sighted again at `now`.
local function lostAgeAt(b, now)
  if b.seenAt == 0 then return 0 end
  local step = now - b.seenAt
  if step < 0 then step = 0 elseif step > SIGHTING_STEP_MS then step = SIGHTING_STEP_MS end
  return b.lostAge + step
end

-- Record a sighting of the connection gone at `now` (the first one starts the count).
local function sightLost(b, now)
  b.lostAge = lostAgeAt(b, now)
  b.seenAt = now
end

-- No sighting (subscribed again, or revoked).
local function clearLost(b)
  b.lostAge = 0
  b.seenAt = 0
end

-- Subscribers of the session's liveness channel on this server: classic, or sharded (a
-- Cluster's subscriber uses SSUBSCRIBE on the owner of the namespace's slot).
-- Subscribers of a liveness channel: '#<name>' is a shard channel (SSUBSCRIBE, a Redis 7
-- Cluster's sharded pub/sub: PUBSUB SHARDNUMSUB), any other name a classic one (NUMSUB).
local function liveSubscribers(channel)
  if string.byte(channel, 1) == 35 then
    return tonumber(rcall('PUBSUB', 'SHARDNUMSUB', string.sub(channel, 2))[2]) or 0
  end
  return tonumber(rcall('PUBSUB', 'NUMSUB', channel)[2]) or 0
end
