--[[
  settle: the owner reports the outcomes of a batch of its grants (done with a result, or
  failed). Server time and the settler's session are read once; each task is decided by
  the ownership proof (includes/owner) from its own record.

  Input (the caller passes numkeys = 4 + 2 × tasks; every key the script touches is
  declared, see claim.lua):
    KEYS[1] the settler's session key   KEYS[2] its change sequence (see includes/owner)
    KEYS[3] the "someone watches" flag (<channel>:watching; any key when ARGV[5] is '')
    KEYS[4] the namespace's task history (includes/history)
    KEYS[2i+3]  container of task i (record key, or hash)
    KEYS[2i+4]  index zset of task i (hash-field mode; the container again in plain mode)
    ARGV[1] session id   ARGV[2] retention ms   ARGV[3] retry backoff ms (failed only)
    ARGV[4] max attempts: a failure settled at attempt >= this is final (the rule claim
            applies to a failed record); 0: not asked (final is then 0)
    ARGV[5] event channel ('' for none; '#<channel>': sharded, SPUBLISH)
    ARGV[6] history length (entries kept, MAXLEN ~; 0 writes none)
    ARGV[7 + 6(i-1)] .. ARGV[12 + 6(i-1)], task i: field ('' in plain mode), task ref,
            fencing token of the grant, state ('D' done or 'F' failed), payload (result
            JSON when done, error JSON when failed), and the grant's attempt as its claim
            reported it ('' when unknown). Quorum mode: a node that missed some of the
            task's grants counts fewer attempts than the quorum's grant reported; the settle
            writes the reported count, so that every node that takes it agrees on whether a
            failure is final

  Output: one reply per task, in order:
    { 1, token, attempt, serverNow, final, repeated }   settled
        final: 1 when a failure is final (no retry will be granted), else 0; always 0 for done
        repeated: 1 when the record already held this very outcome (the same session,
        token, state and payload: a retried settle whose first reply was lost, or one
        whose script failed after writing); the record is not written again, but the
        event is published again and the sequence moves on, so that a standby that missed
        the first learns it. Any other settle of a settled record is -13.
    { -10 } unknown task   { -11, token, session } not owner
    { -12, token, session } token superseded   { -13, state } already settled
    { -14 } session expired   { -15, msLate } deadline passed
    { -1, excerpt } corrupt   { -2, version } newer format   { -4, type } wrong type

  Events: one message per batch that settled anything: a JSON array of 'settled'
  {e, r, s, k, a, o, q, p?} with s = 'D' or 'F', q the settler's change sequence after
  this batch, and p the result JSON of a done task when it is at most 16 KiB, so a
  standby learns the outcome from the event itself, without another round trip. While
  watched (see claim.lua), settles refused after a lease loss (-12, -14, -15) publish
  'rejected' {e, r, s, k, a, o, why} on ARGV[5] .. ':claims'.
]]
--- @include "includes/record"
--- @include "includes/owner"
--- @include "includes/history"

local session, retention, backoff = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local maxAttempts, channel = tonumber(ARGV[4]) or 0, ARGV[5]
local historyMax = tonumber(ARGV[6]) or 0
local tasks = (#KEYS - 4) / 2
local now = serverNowMs()
local alive = rcall('PTTL', KEYS[1]) > 0
local isWatched = nil

local function final(rec)
  if rec.state == 'F' and maxAttempts > 0 and rec.attempt >= maxAttempts then return 1 end
  return 0
end

local out, settled, events = {}, {}, {}
for i = 1, tasks do
  local a = 7 + 6 * (i - 1)
  local container, index, field, ref = KEYS[2 * i + 3], KEYS[2 * i + 4], ARGV[a], ARGV[a + 1]
  local token, state, payload = tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4]
  local attempt = tonumber(ARGV[a + 5])
  local r, err = checkOwner(container, index, field, alive, session, token, now, true)
  if err and err[1] == -13 and r.state == state and r.payload == payload then
    -- checkOwner answers -13 only to the grant's own session and token: the very outcome
    -- the record holds is this caller's earlier settle, applied, whose reply was lost
    out[i] = {1, r.token, r.attempt, now, final(r), 1}
    settled[#settled + 1] = {r = r, ref = ref}
  elseif err then
    local code = err[1]
    if code == -12 or code == -14 or code == -15 then
      -- a holder that lost its lease tries to settle late: show it to a watcher
      if isWatched == nil then isWatched = channel ~= '' and rcall('EXISTS', KEYS[3]) == 1 end
      if isWatched then
        local stale = {state = 'R', token = token, attempt = 0, session = session}
        publish(channel .. ':claims', 'rejected', ref, stale, {why = code})
      end
    end
    out[i] = err
  else
    r.state = state
    r.payload = payload
    r.updatedAt = now
    if attempt and attempt > r.attempt then r.attempt = attempt end
    r.deadline = 0
    local keep = retention
    if state == 'F' then
      r.deadline = now + backoff
      -- kept until the retry time plus the retention: a failed record that expired before
      -- its retry would let the task start again at token 1
      keep = retention + backoff
    end
    store(container, index, field, r, now, keep)
    if state == 'D' then
      historyNote('d', r.token, r.attempt, ref, '')
    else
      historyNote('f', r.token, r.attempt, ref, historyError(payload))
    end
    out[i] = {1, r.token, r.attempt, now, final(r), 0}
    settled[#settled + 1] = {r = r, ref = ref}
  end
end

if #settled > 0 then
  local q = nextSeq(KEYS[2], retention + backoff)
  for j, s in ipairs(settled) do
    local ev = {e = 'settled', r = s.ref, s = s.r.state, k = s.r.token, a = s.r.attempt,
      o = session, q = q}
    if s.r.state == 'D' and #s.r.payload <= 16384 then ev.p = s.r.payload end
    events[j] = ev
  end
  publishRaw(channel, cjson.encode(events))
end
historyFlush(KEYS[4], historyMax, session)
return out
