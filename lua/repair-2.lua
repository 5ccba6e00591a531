--[[
  repair: write a settled outcome onto a node that missed it (quorum mode). A settle counts
  once a majority of the nodes took it; a node that turned it away because it is behind
  (it never saw the grant, holds an undo placeholder or an older record, or lost the
  owner's session) is brought up to date, so that the outcome survives the loss of any
  minority of the nodes. The same record is written when a reader finds a settled outcome
  on some nodes and a claimable record on the others (read repair).

  Written only over: no record; an undo placeholder (state X, attempt 0: its token was
  never used); any record of the same owner session with a token not above ARGV[3]; or a
  record of another session with a lower token that is not running. Never over a running
  record of another session, nor over anything with a higher token (except a placeholder),
  so a repair never undoes a grant or an outcome that is newer.

  Input:
    KEYS[1] container (record key, or hash)   KEYS[2] index zset (hash-field mode)
    ARGV[1] field ('' in plain mode)
    ARGV[2] owner session   ARGV[3] token   ARGV[4] attempt
    ARGV[5] state: 'D' done or 'F' failed   ARGV[6] payload (result or error JSON)
    ARGV[7] retention ms   ARGV[8] retry backoff ms (failed only)

  Output:
    { 1, token }           written, or the node already had this outcome
    { 0, state, token }    left alone: the node's record is newer, or running for another owner
    { -1, excerpt } corrupt   { -2, version } newer format   { -4, type } wrong type

  Events: none (the settle that counted published it).
]]
--- @include "includes/record"

local container, index, field = KEYS[1], KEYS[2], ARGV[1]
local session, token, attempt = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local state, payload = ARGV[5], ARGV[6]
local now = serverNowMs()

local r, err = load(container, index, field, now)
if err then return err end

if r then
  if r.session == session and r.token == token and r.state == state then return {1, token} end
  local placeholder = r.state == 'X' and r.attempt == 0
  local ours = r.session == session and r.token <= token
  local older = r.token < token and r.state ~= 'R'
  if not (placeholder or ours or older) then return {0, r.state, r.token} end
end

local deadline = 0
if state == 'F' then deadline = now + tonumber(ARGV[8]) end
local claimedAt = now
if r and r.session == session and r.token == token then claimedAt = r.claimedAt end
store(container, index, field, {
  state = state, token = token, attempt = attempt, session = session, deadline = deadline,
  claimedAt = claimedAt, updatedAt = now, progress = '', payload = payload
}, now, tonumber(ARGV[7]))
return {1, token}
