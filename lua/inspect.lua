--[[
  inspect: read a task record, decoded, with its owner's remaining session lease.
  Read-only for the record (in hash-field mode it may sweep expired fields).

  Input:
    KEYS[1] container (record key, or hash)   KEYS[2] index zset (hash-field mode)
    KEYS[3] (optional) the session key of the owner the caller expects, ARGV[2] its id:
            every key the script touches is declared (see claim.lua), so the owner's
            lease is read only when the record's owner is that one
    ARGV[1] field ('' in plain mode)   ARGV[2] the expected owner's session id ('' for none)

  Output:
    { 0, serverNow }   absent (never claimed, or its retention ran out)
    { 1, state, token, attempt, session, deadline, claimedAt, updatedAt, progress,
      payload, ownerPttl, serverNow, recordPttl }   present (ownerPttl 0: session gone,
      -1: not read, the owner is not the one expected; recordPttl: ms the record is kept,
      -1 when it has no expiry of its own)
    { -1, excerpt } corrupt   { -2, version } newer format   { -4, type } wrong type

  Events: none.
]]
--- @include "includes/record"

local container, index, field = KEYS[1], KEYS[2], ARGV[1]
local now = serverNowMs()
local r, err = load(container, index, field, now)
if err then return err end
if not r then return {0, now} end
local ownerPttl = -1
if KEYS[3] and ARGV[2] == r.session then ownerPttl = math.max(rcall('PTTL', KEYS[3]), 0) end
local keep
if field == '' then
  keep = rcall('PTTL', container)
else
  local dropAt = rcall('ZSCORE', index, field)
  keep = -1
  if dropAt then keep = tonumber(dropAt) - now end
end
return {
  1, r.state, r.token, r.attempt, r.session, r.deadline, r.claimedAt, r.updatedAt,
  r.progress, r.payload, ownerPttl, now, keep
}
