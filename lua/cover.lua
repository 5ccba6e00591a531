--[[
  cover: a standby's safety net, one call for every holder it covers (O(peers), whatever
  the number of tasks). For each holder session: is it alive, and how far is its change
  sequence? A sequence beyond the last one the standby saw in events means it missed an
  event of that holder, and only then does it re-read that holder's tasks (peek).

  Input (the caller passes numkeys = 2 × holders):
    KEYS[2i-1]  session key of holder i   KEYS[2i]  its change sequence (includes/owner)

  Output: one { pttl, seq } per holder, in order: pttl 0 when the session is gone; seq 0
    when the holder has settled or released nothing within the retention.

  Events: none.
]]
local rcall = redis.call
local out = {}
for i = 1, #KEYS / 2 do
  local pttl = rcall('PTTL', KEYS[2 * i - 1])
  if pttl < 0 then pttl = 0 end
  out[i] = {pttl, tonumber(rcall('GET', KEYS[2 * i])) or 0}
end
return out
