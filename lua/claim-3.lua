--[[
  claim: race for a task, take over an orphaned one, retry a failed one, or learn its state.

  Input:
    KEYS[1] container: the record key (plain mode) or the hash (hash-field mode)
    KEYS[2] index zset of the hash (hash-field mode; unused in plain mode)
    KEYS[3] the claimer's session key
    ARGV[1] field ('' in plain mode)
    ARGV[2] claimer session id
    ARGV[3] session key prefix (session key = prefix .. session id)
    ARGV[4] session ttl ms (every claim refreshes the claimer's session: a worker that is
            claiming is alive, and a grant starts a full lease)
    ARGV[5] task timeout ms (time-to-run: the deadline of a grant)
    ARGV[6] retention ms
    ARGV[7] max attempts: a failed record whose attempt >= this is terminal
    ARGV[8] dry run: '1' reports what a claim would do without granting (paused workers)
    ARGV[9] event channel ('' for none; '#<channel>' for sharded pub/sub, see publish())
    ARGV[10] task ref (identifies the task in events)
    ARGV[11] minimum token (optional; quorum mode). When given, a grant's token is at least
             this (so a grant made on a majority of independent nodes can carry one token,
             the highest of them), and the grant's record keeps the record it replaced (its
             undo note, see includes/record.lua), so that a grant that did not win its
             quorum can be undone exactly (undo-2.lua), even on a node whose answer never
             reached the claimer. Replies are the same with or without it.

  Output:
    { 1, token, attempt, kind, deadlineInMs, serverNow, fromSession }   granted
        kind: 0 fresh, 1 takeover (owner session expired), 2 takeover (deadline passed),
              3 retry after failure, 4 handover (released); fromSession: the previous
              owner ('' when fresh)
    { 2, ownerSession, token, attempt, ownerPttl, deadlineInMs }     held by a live owner
    { 3, ownerSession, token, attempt, updatedAt, resultJson }       done
    { 4, ownerSession, token, attempt, updatedAt, errorJson, terminal, retryInMs }  failed
    { 5, kind }                                                      claimable (dry run only)
    { 6, token, attempt, kind, deadlineInMs, serverNow }             resumed: the claimer's own
        session already holds the task (its earlier claim was granted, but the reply was
        lost, say to a client-side timeout). Nothing is granted anew: the reply carries
        that grant's token, attempt and real kind, and the server's remaining deadline, so
        the claimer's lease ends when the server's does. Answered to a dry run too.
    { -1, excerpt }  corrupt record            { -2, version } record of a newer format
    { -3 }           claimer session expired   { -4, type }    key of another type

  Events: 'claimed' {e, r, s, k, a, o, kind, from}: a takeover, retry or handover on
  ARGV[9]; a fresh grant, the commonest transition, only while someone watches (the key
  ARGV[9] .. ':watching' exists, kept alive by `pairlock watch`), on ARGV[9] .. ':claims'.
  Workers need no fresh-claim events, and skipping them spares every grant an encode and
  a publish. Likewise, while watched: 'standby' {e, r, s, k, a, o, by} on ARGV[9] .. ':claims'
  when a live owner holds the task (o: the owner, by: the claimer that now covers it).
]]
--- @include "includes/record"

local container, index = KEYS[1], KEYS[2]
local field, claimer, sessionPrefix = ARGV[1], ARGV[2], ARGV[3]
local sessionTtl, taskTimeout, retention = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local maxAttempts, dryRun, channel, ref = tonumber(ARGV[7]), ARGV[8] == '1', ARGV[9], ARGV[10]
local quorumMode = ARGV[11] ~= nil and ARGV[11] ~= ''
local minToken = 0
if quorumMode then minToken = tonumber(ARGV[11]) or 0 end

local now = serverNowMs()
-- A claimer whose session lapsed may learn nothing and be granted nothing. A live one is
-- refreshed: under heavy load its heartbeat may queue behind its own claims.
if rcall('PEXPIRE', KEYS[3], sessionTtl) == 0 then return {-3} end

local r, err = load(container, index, field, now)
if err then return err end

local function grant(token, attempt, kind, from)
  if dryRun then return {5, kind} end
  if token < minToken then token = minToken end
  local rec = {
    state = 'R', token = token, attempt = attempt, session = claimer,
    deadline = now + taskTimeout, claimedAt = now, updatedAt = now, progress = '', kind = kind,
    payload = ''
  }
  if quorumMode then rec.undo = undoNote(r) end
  store(container, index, field, rec, now, taskTimeout + retention)
  if kind ~= 0 then
    publish(channel, 'claimed', ref, rec, {kind = kind, from = from})
  elseif watched(channel) then
    publish(channel .. ':claims', 'claimed', ref, rec, {kind = kind, from = from})
  end
  return {1, token, attempt, kind, taskTimeout, now, from}
end

if not r then return grant(1, 1, 0, '') end

if r.state == 'D' then
  return {3, r.session, r.token, r.attempt, r.updatedAt, r.payload}
end

if r.state == 'R' then
  local pttl = sessionPttl(sessionPrefix, r.session)
  if r.session == claimer and now < r.deadline then
    return {6, r.token, r.attempt, r.kind, r.deadline - now, now}
  end
  if pttl > 0 and now < r.deadline then
    if not dryRun and watched(channel) then
      publish(channel .. ':claims', 'standby', ref, r, {by = claimer})
    end
    return {2, r.session, r.token, r.attempt, pttl, r.deadline - now}
  end
  -- orphaned: the owner's session expired (crash, pause, partition) or its handler hung
  local kind = 2
  if pttl == 0 then kind = 1 end
  return grant(r.token + 1, r.attempt + 1, kind, r.session)
end

if r.state == 'F' then
  if r.attempt >= maxAttempts then
    return {4, r.session, r.token, r.attempt, r.updatedAt, r.payload, 1, 0}
  end
  if now < r.deadline then
    return {4, r.session, r.token, r.attempt, r.updatedAt, r.payload, 0, r.deadline - now}
  end
  return grant(r.token + 1, r.attempt + 1, 3, r.session)
end

-- 'X': released by a closing owner; anyone may take it at once
return grant(r.token + 1, r.attempt + 1, 4, r.session)
