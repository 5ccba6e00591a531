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
    ARGV[10] max attempts: a failure settled at attempt >= this is final (the rule claim-3
             applies to a failed record); 0: not asked (final is then 0)

  Output:
    { 1, token, attempt, serverNow, final, repeated }   settled
        final: 1 when a failure is final (no retry will be granted), else 0; always 0 for done
        repeated: 1 when the record already held this very outcome (the same session,
        token, state and payload: a retried settle whose first reply was lost); nothing is
        written. Any other settle of a settled record is -13.
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
local state, maxAttempts = ARGV[4], tonumber(ARGV[10]) or 0
local now = serverNowMs()
local r, err = checkOwner(container, index, field, KEYS[3], ARGV[2], tonumber(ARGV[3]), now, true)

local function final(rec)
  if rec.state == 'F' and maxAttempts > 0 and rec.attempt >= maxAttempts then return 1 end
  return 0
end

-- checkOwner answers -13 only to the grant's own session and token: a settle of the very
-- outcome the record holds is this caller's earlier settle, applied, whose reply was lost
if err and err[1] == -13 and r.state == state and r.payload == ARGV[5] then
  return {1, r.token, r.attempt, now, final(r), 1}
end
if err then
  -- a holder that lost its lease tries to settle late: show it to a watcher
  local code = err[1]
  if (code == -12 or code == -14 or code == -15) and watched(ARGV[8]) then
    local stale = {state = 'R', token = tonumber(ARGV[3]), attempt = 0, session = ARGV[2]}
    publish(ARGV[8] .. ':claims', 'rejected', ARGV[9], stale, {why = code})
  end
  return err
end

r.state = state
r.payload = ARGV[5]
r.updatedAt = now
r.deadline = 0
local keep = tonumber(ARGV[6])
if r.state == 'F' then
  r.deadline = now + tonumber(ARGV[7])
  -- kept until the retry time plus the retention: a failed record that expired before its
  -- retry would let the task start again at token 1
  keep = keep + tonumber(ARGV[7])
end
store(container, index, field, r, now, keep)
local extra = nil
if r.state == 'D' and #r.payload <= 16384 then extra = {p = r.payload} end
publish(ARGV[8], 'settled', ARGV[9], r, extra)
return {1, r.token, r.attempt, now, final(r), 0}
