--[[
  settle: the owner reports the outcome of its grant (done with a result, or failed).

  Input:
    KEYS[1] container (record key, or hash)   KEYS[2] index zset (hash-field mode)
    KEYS[3] the settler's session key
    ARGV[1] field ('' in plain mode)
    ARGV[2] session id     ARGV[3] fencing token of the grant
    ARGV[4] state: 'D' done or 'F' failed
    ARGV[5] payload: result JSON (done) or error JSON (failed)
    ARGV[6] retention ms   ARGV[7] retry backoff ms (failed only)
    ARGV[8] event channel ('' for none; '#<channel>': sharded, SPUBLISH)  ARGV[9] task ref

  Output:
    { 1, token, attempt, serverNow }   settled
    { -10 } unknown task   { -11, token, session } not owner
    { -12, token, session } token superseded   { -13, state } already settled
    { -14 } session expired   { -15, msLate } deadline passed
    { -1, excerpt } corrupt   { -2, version } newer format   { -4, type } wrong type

  Events: while watched (see claim-3.lua), a settle refused after a lease loss (-12, -14,
  -15) publishes 'rejected' {e, r, s, k, a, o, why} on ARGV[8] .. ':claims'.
  'settled' {e, r, s, k, a, o, p?} with s = 'D' or 'F'; p is the result JSON of a
  done task when it is at most 16 KiB, so a standby learns the outcome from the event
  itself, without another round trip.
]]
--- @include "includes/record"
--- @include "includes/owner"

local container, index, field = KEYS[1], KEYS[2], ARGV[1]
local now = serverNowMs()
local r, err = checkOwner(container, index, field, KEYS[3], ARGV[2], tonumber(ARGV[3]), now, true)
if err then
  -- a holder that lost its lease tries to settle late: show it to a watcher
  local code = err[1]
  if (code == -12 or code == -14 or code == -15) and watched(ARGV[8]) then
    local stale = {state = 'R', token = tonumber(ARGV[3]), attempt = 0, session = ARGV[2]}
    publish(ARGV[8] .. ':claims', 'rejected', ARGV[9], stale, {why = code})
  end
  return err
end

r.state = ARGV[4]
r.payload = ARGV[5]
r.updatedAt = now
r.deadline = 0
if r.state == 'F' then r.deadline = now + tonumber(ARGV[7]) end
store(container, index, field, r, now, tonumber(ARGV[6]))
local extra = nil
if r.state == 'D' and #r.payload <= 16384 then extra = {p = r.payload} end
publish(ARGV[8], 'settled', ARGV[9], r, extra)
return {1, r.token, r.attempt, now}
