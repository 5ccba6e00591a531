--[[
  release: graceful handover of a batch of grants. The owner gives each back without an
  outcome, so a peer can claim it at once (token + 1) instead of waiting for the session
  to expire.

  Input (the caller passes numkeys = 3 + 2 × tasks):
    KEYS[1] owner's session key   KEYS[2] its change sequence (see includes/owner)
    KEYS[3] the namespace's task history (includes/history)
    KEYS[2i+2]  container of task i   KEYS[2i+3]  index zset of task i (the container in
                plain mode)
    ARGV[1] session id   ARGV[2] retention ms
    ARGV[3] event channel ('' for none; '#<channel>': sharded, SPUBLISH)
    ARGV[4] '1': the grants were never run to an effect (the holder lost its lease and its
            handler stopped, or nobody was left to run them): they use up no attempt, so
            the next grant carries the same attempt number (its token is still a new one)
    ARGV[5] history length (entries kept, MAXLEN ~; 0 writes none)
    ARGV[6 + 3(i-1)] .. ARGV[8 + 3(i-1)], task i: field ('' in plain mode), task ref,
            fencing token

  Output: one reply per task, in order:
    { 1, token, attempt, serverNow, 0, repeated }   released; repeated: 1 when the record
        was already released by this very grant (a retried release whose reply was lost)
    { -10 } unknown task   { -11, token, session } not owner
    { -12, token, session } token superseded   { -13, state } already settled
    { -14 } session expired
    { -1, excerpt } corrupt   { -2, version } newer format   { -4, type } wrong type

  Events: one message per batch that released anything: a JSON array of 'released'
  {e, r, s = 'X', k, a, o, q} (q: the owner's change sequence after this batch).
]]
--- @include "includes/record"
--- @include "includes/owner"
--- @include "includes/history"

local session, retention, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local unused = ARGV[4] == '1'
local historyMax = tonumber(ARGV[5]) or 0
local tasks = (#KEYS - 3) / 2
local now = serverNowMs()
local alive = rcall('PTTL', KEYS[1]) > 0

local out, released = {}, {}
for i = 1, tasks do
  local a = 6 + 3 * (i - 1)
  local container, index, field = KEYS[2 * i + 2], KEYS[2 * i + 3], ARGV[a]
  local r, err = checkOwner(container, index, field, alive, session, tonumber(ARGV[a + 2]), now, false)
  -- -13 comes only to the grant's own session and token (see includes/owner)
  if err and err[1] == -13 and r.state == 'X' then
    out[i] = {1, r.token, r.attempt, now, 0, 1}
  elseif err then
    out[i] = err
  else
    r.state = 'X'
    r.payload = ''
    r.updatedAt = now
    r.deadline = 0
    if unused and r.attempt > 0 then r.attempt = r.attempt - 1 end
    store(container, index, field, r, now, retention)
    out[i] = {1, r.token, r.attempt, now, 0, 0}
    released[#released + 1] = {r = r, ref = ARGV[a + 1]}
    historyNote(unused and 'u' or 'x', r.token, r.attempt, ARGV[a + 1], '')
  end
end

if #released > 0 then
  local q = nextSeq(KEYS[2], retention)
  local events = {}
  for j, x in ipairs(released) do
    events[j] = {e = 'released', r = x.ref, s = 'X', k = x.r.token, a = x.r.attempt, o = session, q = q}
  end
  publishRaw(channel, cjson.encode(events))
end
historyFlush(KEYS[3], historyMax, session)
return out
