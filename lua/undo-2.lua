--[[
  undo: take back a grant that did not win its quorum (quorum mode: a claim granted on too
  few of the independent nodes, too late to be used, or by a node whose answer came after
  the claimer stopped waiting). The claimer never runs the task under a grant it undoes.

  Exactly: the record becomes the one the grant replaced, as it was stored, token included,
  or no record at all when there was none. The grant kept that record (its undo note, see
  includes/record.lua, written by claim.lua in quorum mode), so an undo needs only the
  grant's session, and its token when the claimer knows it. A grant that reported progress
  has no note any more: it was used, and is never undone.

  Fencing: a token may go back on one node, never across the quorum. A grant is used only
  by a claimer that won it: granted on a majority within its validity. Such a grant is
  never undone: its claimer undoes only the grants it does not use, and an undo names the
  grant it takes back (ARGV[3]; without a token, only a grant other than the one the
  claimer kept, ARGV[4]). Any two majorities share a node. On that node, the later of two
  used grants was made over the earlier one or over a record that came after it (its
  settle, its release, a later grant, or an undo that restored one of those), all of which
  carry the earlier token or a higher one; the claim adds one, and the claimer makes every
  node of its majority carry the highest token any of them gave (claim's minimum token).
  So a used token is above every token used before it, and is never granted again. A
  token that is undone was used by nobody: giving it out again later harms no one.

  The claimer waits for its undos of a task before it claims that task again: after an
  exact undo the node may grant the same session and token again, and an undo that ran
  after such a grant would take back the wrong one.

  Input:
    KEYS[1] container (record key, or hash)   KEYS[2] index zset (hash-field mode)
    ARGV[1] field ('' in plain mode)
    ARGV[2] session id of the grant
    ARGV[3] token of the grant; '' for whichever grant of this session the node holds (a
            node whose claim answer never came: it may have granted, with a token unknown)
    ARGV[4] with ARGV[3] = '': a token to keep, the grant the claimer won ('' for none)
    ARGV[5] retention ms: how long a restored record is kept (a running or failed one also
            until its deadline)
    ARGV[6] event channel ('' for none; '#<channel>': sharded, SPUBLISH)   ARGV[7] task ref

  Output:
    { 1, token }   undone: the record is the one the grant replaced (or gone); token: the
                   undone grant's
    { 0 }          nothing to undo: the record is not an untouched grant of this session
                   with this token (absent, settled, released, taken over, another token,
                   the kept token, progress reported, or a grant made without a note)
    { -1, excerpt } corrupt record (the current one, or its undo note)
    { -2, version } newer format   { -4, type } wrong type

  Events (ARGV[6]): 'undone' {e, r, s, k, a, o} with the restored record, when undone; s is
  '' (and k and a 0) when no record remains.
]]
--- @include "includes/record"

local container, index, field = KEYS[1], KEYS[2], ARGV[1]
local session, token, keep = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = serverNowMs()

local r, err = load(container, index, field, now)
if err then return err end
if not r or r.state ~= 'R' or r.session ~= session or not r.undo then return {0} end
if token and r.token ~= token then return {0} end
if not token and keep and r.token == keep then return {0} end

local undone = r.token
if r.undo == '-' then
  remove(container, index, field)
  publish(ARGV[6], 'undone', ARGV[7], {state = '', token = 0, attempt = 0, session = ''})
  return {1, undone}
end
local rec
rec, err = decodeRecord(r.undo)
if err then return err end
local keepMs = tonumber(ARGV[5])
if (rec.state == 'R' or rec.state == 'F') and rec.deadline > now then
  keepMs = keepMs + rec.deadline - now
end
store(container, index, field, rec, now, keepMs)
publish(ARGV[6], 'undone', ARGV[7], rec)
return {1, undone}
