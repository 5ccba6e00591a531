--[[
  repair: write a settled outcome onto a node that missed it (quorum mode). A settle counts
  once a majority of the nodes took it; a node that turned it away because it is behind
  (it never saw the grant, holds an older record, or lost the owner's session) is brought
  up to date, so that the outcome survives the loss of any minority of the nodes. The same
  record is written when a reader finds a settled outcome on some nodes and a claimable
  record on the others (read repair).

  Written only over: no record; a record of the owner session with a lower token (an
  earlier grant or outcome of its own); a record of another session with a lower token that
  is not running; and this very grant (the owner session, this token) only when ARGV[9] is
  '1'. Never over a running record of another session, nor over anything with a higher
  token, so a repair never undoes a grant or an outcome that is newer.

  ARGV[9] says whether the outcome counted. '1': a majority took the settle (or a reader
  found it settled on some nodes and nothing newer on any): a node that turned it away
  because it lost the owner's session, or saw the deadline pass, is behind and gets it
  too. '0': the settle has not reached a majority yet, and only nodes that never saw the
  grant are written: a node that holds this very grant turned the settle away on its own
  authority (the lease is gone there) and keeps it, so a writer whose lease is gone on a
  majority is refused, as on one Redis.

  Input:
    KEYS[1] container (record key, or hash)   KEYS[2] index zset (hash-field mode)
    ARGV[1] field ('' in plain mode)
    ARGV[2] owner session   ARGV[3] token   ARGV[4] attempt
    ARGV[5] state: 'D' done or 'F' failed   ARGV[6] payload (result or error JSON)
    ARGV[7] retention ms   ARGV[8] retry backoff ms (failed only)
    ARGV[9] '1' when the outcome counted, '0' when it has not (see above)

  Output:
    { 1, token }           written, or the node already had this outcome
    { 0, state, token }    left alone: the node's record is newer, or this very grant while
                           the outcome has not counted; trying again changes nothing
    { 2, state, token }    left alone for now: a running grant of another session with a
                           lower token, or the same token (the other side of a split: a
                           minority grant its claimer undoes once its round is decided);
                           a later try may write
    { -1, excerpt } corrupt   { -2, version } newer format   { -4, type } wrong type

  Events: none (the settle that counted published it).
]]
--- @include "includes/record"

local container, index, field = KEYS[1], KEYS[2], ARGV[1]
local session, token, attempt = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local state, payload, counted = ARGV[5], ARGV[6], ARGV[9] == '1'
local now = serverNowMs()

local r, err = load(container, index, field, now)
if err then return err end

if r then
  local thisGrant = r.session == session and r.token == token
  if thisGrant and r.state == state then return {1, token} end
  local ownEarlier = r.session == session and r.token < token
  local older = r.token < token and r.state ~= 'R'
  if not ((thisGrant and counted) or ownEarlier or older) then
    if r.state == 'R' and r.session ~= session and r.token <= token then
      return {2, r.state, r.token}
    end
    return {0, r.state, r.token}
  end
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
