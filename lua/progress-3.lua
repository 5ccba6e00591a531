--[[
  progress: the owner records how far its handler got (a number and an optional note),
  so that inspect and a later owner can see it. The record keeps its lifetime.

  Input:
    KEYS[1] container   KEYS[2] index zset (hash-field mode)   KEYS[3] owner's session key
    ARGV[1] field ('' in plain mode)   ARGV[2] session id   ARGV[3] fencing token
    ARGV[4] progress (a number, as text)   ARGV[5] note JSON ('' for none)

  Output:
    { 1, serverNow }   recorded
    { -10 } unknown task   { -11, token, session } not owner
    { -12, token, session } token superseded   { -13, state } already settled
    { -14 } session expired   { -15, msLate } deadline passed
    { -1, excerpt } corrupt   { -2, version } newer format   { -4, type } wrong type

  Events: none (progress is not a state change).
]]
--- @include "includes/record"
--- @include "includes/owner"

local container, index, field = KEYS[1], KEYS[2], ARGV[1]
local now = serverNowMs()
local r, err = checkOwner(container, index, field, KEYS[3], ARGV[2], tonumber(ARGV[3]), now, true)
if err then return err end

r.progress = ARGV[4]
r.payload = ARGV[5]
r.updatedAt = now
update(container, index, field, r)
return {1, now}
