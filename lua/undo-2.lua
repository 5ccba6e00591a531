--[[
  undo: take back a grant that did not win its quorum (quorum mode: a claim granted on too
  few of the independent nodes, or too late to be used). The claimer never ran the task
  under this grant. The record goes back to what it was before the grant, except for its
  token, which is kept: a node's token never goes backwards, so no (session, token) pair
  is ever granted twice on a node, and a delayed undo can never take back a later grant.
  Where there was no record, a placeholder keeps the token: state X (released) with
  attempt 0, owned by the undone grant's session. A claim treats it like a released
  record (token + 1, attempt 1, kind 4); quorum mode reports such a grant as fresh.

  Input:
    KEYS[1] container (record key, or hash)   KEYS[2] index zset (hash-field mode)
    ARGV[1] field ('' in plain mode)
    ARGV[2] session id of the grant   ARGV[3] token of the grant
    ARGV[4] the record the grant replaced, as claim returned it ('' when there was none)
    ARGV[5] retention ms (how long the restored record is kept)
    ARGV[6] event channel ('' for none; '#<channel>': sharded, SPUBLISH)   ARGV[7] task ref

  Output:
    { 1, token }   undone: the record is the previous one again, with this token
    { 0 }          nothing to undo: the record is no longer that grant (absent, settled,
                   released, taken over, or another token)
    { -1, excerpt } corrupt record (the current one, or ARGV[4])
    { -2, version } newer format   { -4, type } wrong type

  Events (ARGV[6]): 'undone' {e, r, s, k, a, o} with the restored state, when undone.
]]
--- @include "includes/record"

local container, index, field = KEYS[1], KEYS[2], ARGV[1]
local session, token, previous = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = serverNowMs()

local r, err = load(container, index, field, now)
if err then return err end
if not r or r.state ~= 'R' or r.session ~= session or r.token ~= token then return {0} end

local rec
if previous == '' then
  rec = {
    state = 'X', token = token, attempt = 0, session = session, deadline = 0,
    claimedAt = now, updatedAt = now, progress = '', payload = ''
  }
else
  rec, err = decodeRecord(previous)
  if err then return err end
  rec.token = token
end
store(container, index, field, rec, now, tonumber(ARGV[5]))
publish(ARGV[6], 'undone', ARGV[7], rec)
return {1, token}
