--[[
  cover: a standby's safety net, one call for every holder it covers (O(peers), whatever
  the number of tasks). For each holder session: is it alive, how far is its change
  sequence, and is the connection it is bound to still there? A sequence beyond the last
  one the standby saw in events means it missed an event of that holder, and only then
  does it re-read that holder's tasks (peek).

  Connection evidence (see includes/binding): for a holder bound on this server run whose
  liveness channel has no subscriber, each sighting adds the server time since the last
  one (at most 100 ms a step) to the binding's lost age; a sighting of the channel
  subscribed again clears it. A claim may take the holder's tasks over once that age is
  the holder's crash grace (claim.lua).

  Input (the caller passes numkeys = 3 × holders):
    KEYS[3i-2]  session key of holder i   KEYS[3i-1]  its change sequence (includes/owner)
    KEYS[3i]    its binding key
    ARGV[1]     liveness channel prefix (channel = prefix .. session id; '' to read no
                connection evidence)
    ARGV[3 + i] session id of holder i   (ARGV[2], ARGV[3] unused, reserved)

  Output: one { pttl, seq, lostInMs } per holder, in order: pttl 0 when the session is
    gone; seq 0 when the holder has settled or released nothing within the retention;
    lostInMs -2 when the holder's session is not bound to a connection, -1 without a
    sighting of its connection gone, else the ms until a claim may take its tasks over on
    that evidence (0: now).

  Events: none.
]]
local rcall = redis.call
--- @include "includes/binding"

local livePrefix = ARGV[1]
local now = nil
local out = {}
for i = 1, #KEYS / 3 do
  local pttl = rcall('PTTL', KEYS[3 * i - 2])
  if pttl < 0 then pttl = 0 end
  local lostIn = -1
  if pttl > 0 and livePrefix ~= '' then
    local b = decodeBinding(rcall('GET', KEYS[3 * i]))
    if not b then lostIn = -2 end
    -- a healthy holder costs GET and NUMSUB; the server run is read only once one is gone
    local gone = b and b.run ~= '-' and liveSubscribers(livePrefix .. ARGV[3 + i]) == 0
    if b and not gone and b.seenAt ~= 0 then
      -- subscribed again (a reconnect): the sighting no longer holds
      clearLost(b)
      rcall('SET', KEYS[3 * i], encodeBinding(b), 'KEEPTTL')
    elseif gone and b.run == serverRunId() then
      if not now then
        local t = rcall('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      sightLost(b, now)
      rcall('SET', KEYS[3 * i], encodeBinding(b), 'KEEPTTL')
      lostIn = b.grace - b.lostAge
      if lostIn < 0 then lostIn = 0 end
    end
  end
  out[i] = {pttl, tonumber(rcall('GET', KEYS[3 * i - 1])) or 0, lostIn}
end
return out
