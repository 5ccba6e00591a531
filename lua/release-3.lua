--[[
  release: graceful handover. The owner gives its grant back without an outcome, so a
  peer can claim it at once (token + 1) instead of waiting for the session to expire.

  Input:
    KEYS[1] container   KEYS[2] index zset (hash-field mode)   KEYS[3] owner's session key
    ARGV[1] field ('' in plain mode)   ARGV[2] session id   ARGV[3] fencing token
    ARGV[4] retention ms   ARGV[5] event channel ('' for none; '#<channel>': sharded,
    SPUBLISH)   ARGV[6] task ref

  Output:
    { 1, token, attempt, serverNow, 0, repeated }   released; repeated: 1 when the record
        was already released by this very grant (a retried release whose reply was lost)
    { -10 } unknown task   { -11, token, session } not owner
    { -12, token, session } token superseded   { -13, state } already settled
    { -14 } session expired
    { -1, excerpt } corrupt   { -2, version } newer format   { -4, type } wrong type

  Events: 'released' {e, r, s = 'X', k, a, o}.
]]
--- @include "includes/record"
--- @include "includes/owner"

local container, index, field = KEYS[1], KEYS[2], ARGV[1]
local now = serverNowMs()
local r, err = checkOwner(container, index, field, KEYS[3], ARGV[2], tonumber(ARGV[3]), now, false)
-- -13 comes only to the grant's own session and token (see includes/owner)
if err and err[1] == -13 and r.state == 'X' then return {1, r.token, r.attempt, now, 0, 1} end
if err then return err end

r.state = 'X'
r.payload = ''
r.updatedAt = now
r.deadline = 0
store(container, index, field, r, now, tonumber(ARGV[4]))
publish(ARGV[5], 'released', ARGV[6], r)
return {1, r.token, r.attempt, now, 0, 0}
