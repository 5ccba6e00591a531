--[[
  claim: race for a batch of tasks — take over an orphaned one, retry a failed one, or
  learn its state. The batch is the unit on the wire, the task the unit of decision: the
  server clock, the claimer's session and the "is anyone watching" flag are read once,
  then every task is decided by the same rules from its own record alone (a lone task is
  a batch of one).

  Input (the caller passes numkeys = 3 + 3 × owners + 2 × tasks). Every key the script
  touches is declared, so that on a Cluster whose slot is migrating Redis itself answers
  ASK or TRYAGAIN before the script runs, never a read of a key that is on the other node:
    KEYS[1]        the claimer's session key
    KEYS[2]        the "someone watches" flag (<channel>:watching; any key when ARGV[8] is '')
    KEYS[3]        the namespace's task history (includes/history)
    KEYS[3o+1 .. 3o+3]  for owner o = 1..n: its session key, its change sequence, its binding
                   key (owner 1 is the claimer itself; the others, the sessions the claimer
                   expects to find holding tasks: its peers)
    KEYS[3 + 3n + 2i - 1]  container of task i: the record key (plain) or the hash (hash mode)
    KEYS[3 + 3n + 2i]      index zset of that hash (hash-field mode; the container in plain mode)
    ARGV[1] claimer session id
    ARGV[2] history length: entries the task history keeps (MAXLEN ~); 0 writes none
    ARGV[3] session ttl ms (every claim refreshes the claimer's session: a worker that is
            claiming is alive, and a grant starts a full lease)
    ARGV[4] task timeout ms (time-to-run: the deadline of a grant)
    ARGV[5] retention ms
    ARGV[6] max attempts: a failed record whose attempt >= this is terminal
    ARGV[7] dry run: '1' reports what a claim would do without granting (paused workers)
    ARGV[8] event channel ('' for none; '#<channel>' for sharded pub/sub, see publish())
    ARGV[9] quorum mode: '1' when every task names a minimum token (below), else ''
    ARGV[10] number of owners n (above)
    ARGV[11] '1' to use connection evidence (includes/binding), else ''
    ARGV[12] liveness channel prefix (channel = prefix .. session id)
    ARGV[12 + o]  session id of owner o
    ARGV[13 + n + 3(i-1)]  field of task i ('' in plain mode)
    ARGV[14 + n + 3(i-1)]  task ref of task i (identifies the task in events)
    ARGV[15 + n + 3(i-1)]  minimum token of task i (quorum mode; '' otherwise; see below)

  Output: one reply per task, in order:
    { 1, token, attempt, kind, deadlineInMs, serverNow, fromSession }   granted
        kind: 0 fresh, 1 takeover (owner session expired), 2 takeover (deadline passed),
              3 retry after failure, 4 handover (released), 5 takeover (the connection the
              owner's session is bound to is gone: seen gone for at least the owner's
              crash grace (its lost age, includes/binding), on the server run where the
              binding was made, and still gone; the grant revokes the owner's session, so every other task it held is
              orphaned too, and its next call learns it), 6 reclaimed (the claimer's own
              worker held the task before: it released the grant after losing its lease,
              or held it under a session of its own that expired; a worker taking its own
              task back is neither a peer's takeover nor a handover); fromSession: the
              previous owner ('' when fresh)
    { 2, ownerSession, token, attempt, ownerPttl, deadlineInMs, ownerSeq }
        held by a live owner (ownerPttl: ms until its session expires, or until its
        connection evidence allows a takeover, whichever is sooner); ownerSeq: the owner's change sequence now (0 when none), from
        which a standby can tell later whether it missed one of the owner's events
    { 3, ownerSession, token, attempt, updatedAt, resultJson }       done
    { 4, ownerSession, token, attempt, updatedAt, errorJson, terminal, retryInMs }  failed
    { 5, kind }                                                      claimable (dry run only)
    { 6, token, attempt, kind, deadlineInMs, serverNow }             resumed: the claimer's own
        session already holds the task (its earlier claim was granted, but the reply was
        lost, say to a client-side timeout). Nothing is granted anew: the reply carries
        that grant's token, attempt and real kind, and the server's remaining deadline, so
        the claimer's lease ends when the server's does. Answered to a dry run too.
    { 7, ownerSession }  held by a session whose keys the caller did not declare: nothing is
        decided or written for this task; the caller asks again with that owner's keys
    { -1, excerpt }  corrupt record            { -2, version } record of a newer format
    { -3 }           claimer session expired   { -4, type }    key of another type
    A record that cannot be read fails its own task only; any other error (a missing ACL
    grant, say) is raised for the batch.

  Quorum mode: a grant's token is at least the task's minimum token (so a grant made on a
  majority of independent nodes can carry one token, the highest of them), and the grant's
  record keeps the record it replaced (its undo note, see includes/record.lua), so that a
  grant that did not win its quorum can be undone exactly (undo-2.lua), even on a node whose
  answer never reached the claimer. Replies are the same in both modes.

  Events: 'claimed' {e, r, s, k, a, o, kind, from}: a takeover, retry or handover on
  ARGV[8]; a fresh grant, the commonest transition, only while someone watches (the key
  ARGV[8] .. ':watching' exists, kept alive by `pairlock watch`), on ARGV[8] .. ':claims'.
  Workers need no fresh-claim events, and skipping them spares every grant an encode and
  a publish. Likewise, while watched: 'standby' {e, r, s, k, a, o, by} on ARGV[8] .. ':claims'
  when a live owner holds the task (o: the owner, by: the claimer that now covers it).
]]
--- @include "includes/record"
--- @include "includes/binding"
--- @include "includes/history"

local claimer = ARGV[1]
local sessionTtl, taskTimeout, retention = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local maxAttempts, dryRun, channel = tonumber(ARGV[6]), ARGV[7] == '1', ARGV[8]
local quorumMode, ownerCount = ARGV[9] == '1', tonumber(ARGV[10])
local useBinding, livePrefix = ARGV[11] == '1', ARGV[12]
local historyMax = tonumber(ARGV[2]) or 0
local firstTask = 4 + 3 * ownerCount -- KEYS index of the first task's container
local tasks = (#KEYS - firstTask + 1) / 2
local firstArg = 13 + ownerCount -- ARGV index of the first task's field
-- the declared owners: session id -> its keys
local declared = {}
for o = 1, ownerCount do
  local k = 3 * o + 1
  declared[ARGV[12 + o]] = {session = KEYS[k], seq = KEYS[k + 1], bind = KEYS[k + 2]}
end
-- sessions are '<workerId>#<epoch>': a record of another session of the claimer's worker
local claimerWorker = string.match(claimer, '^(.*)#%d+$')
local function ownWorker(session)
  return claimerWorker ~= nil and string.match(session, '^(.*)#%d+$') == claimerWorker
end

local out = {}
-- A claimer whose session lapsed may learn nothing and be granted nothing. A live one is
-- refreshed: under heavy load its heartbeat may queue behind its own claims.
-- The refresh is this script's first write, and for a claim one that Redis refuses when
-- its memory is full (SET is deny-oom, PEXPIRE is not): under `noeviction` and a full
-- memory a claim is refused whole, before it grants anything, rather than grant a task whose
-- outcome could not be settled (Redis checks memory only before a script's first write).
local refreshed
if dryRun then
  refreshed = rcall('PEXPIRE', KEYS[1], sessionTtl) == 1
else
  local desc = rcall('GET', KEYS[1])
  refreshed = desc and rcall('SET', KEYS[1], desc, 'XX', 'PX', sessionTtl)
end
if not refreshed then
  for i = 1, tasks do out[i] = {-3} end
  return out
end

local now = serverNowMs()
local isWatched = channel ~= '' and rcall('EXISTS', KEYS[2]) == 1
-- owners' liveness and change sequences, read once per owner per batch; nil for an owner
-- whose keys were not declared
local owners = {}
local function owner(session)
  local o = owners[session]
  if not o then
    local k = declared[session]
    if not k then return nil end
    local seq = rcall('GET', k.seq)
    local pttl = rcall('PTTL', k.session)
    if pttl < 0 then pttl = 0 end
    o = {pttl = pttl, seq = tonumber(seq) or 0, keys = k}
    owners[session] = o
    local b = nil
    if useBinding then b = decodeBinding(rcall('GET', k.bind)) end
    if b and b.run == '-' then
      o.revoked = true
    elseif b and o.pttl > 0 and b.seenAt > 0 and b.run == serverRunId() then
      -- the connection was seen gone; the binding is this epoch's (a rebind clears the
      -- sighting) and was made on this server run
      local waitMs = b.grace - lostAgeAt(b, now)
      if liveSubscribers(livePrefix .. session) > 0 then
        -- subscribed again but not yet re-bound: a reconnect, not a crash
      elseif waitMs <= 0 then
        o.lost = b
      elseif waitMs < o.pttl then
        o.pttl = waitMs
      end
    end
  end
  return o
end

-- Take over from an owner whose connection is gone: revoke its session, so that every
-- other task it held is orphaned too and its next call learns that all it held is gone.
local function revoke(session, o)
  if dryRun or not o.lost then return end
  rcall('DEL', o.keys.session)
  o.lost.run = '-'
  clearLost(o.lost)
  rcall('SET', o.keys.bind, encodeBinding(o.lost), 'PX', o.pttl)
  o.lost = nil
  o.revoked = true
  o.pttl = 0
end

local function claimOne(container, index, field, ref, minToken)
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
    historyNote('c' .. kind, token, attempt, ref, from)
    if kind ~= 0 then
      publish(channel, 'claimed', ref, rec, {kind = kind, from = from})
    elseif isWatched then
      publish(channel .. ':claims', 'claimed', ref, rec, {kind = kind, from = from})
    end
    return {1, token, attempt, kind, taskTimeout, now, from}
  end

  if not r then return grant(1, 1, 0, '') end

  if r.state == 'D' then
    return {3, r.session, r.token, r.attempt, r.updatedAt, r.payload}
  end

  if r.state == 'R' then
    if r.session == claimer and now < r.deadline then
      return {6, r.token, r.attempt, r.kind, r.deadline - now, now}
    end
    local o = owner(r.session)
    if not o then return {7, r.session} end
    if o.pttl > 0 and not o.lost and now < r.deadline then
      if not dryRun and isWatched then
        publish(channel .. ':claims', 'standby', ref, r, {by = claimer})
      end
      return {2, r.session, r.token, r.attempt, o.pttl, r.deadline - now, o.seq}
    end
    -- orphaned: the owner's session expired (crash, pause, partition) or its handler hung.
    -- Past the deadline the kind is 2 even when the session is gone too: the owner's own
    -- deadline stopped it, whatever its session (quorum mode relies on this: a session
    -- seen expired on one node is no proof, a deadline passed is)
    local kind = 2
    if o.lost or o.revoked then
      kind = 5
      revoke(r.session, o)
    elseif o.pttl == 0 and now < r.deadline then
      kind = 1
      if ownWorker(r.session) then kind = 6 end
    end
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

  -- 'X': released by a closing owner (or one that lost its lease); anyone may take it at once
  if ownWorker(r.session) then return grant(r.token + 1, r.attempt + 1, 6, r.session) end
  return grant(r.token + 1, r.attempt + 1, 4, r.session)
end

for i = 1, tasks do
  local a = firstArg + 3 * (i - 1)
  local k = firstTask + 2 * (i - 1)
  local minToken = 0
  if quorumMode then minToken = tonumber(ARGV[a + 2]) or 0 end
  out[i] = claimOne(KEYS[k], KEYS[k + 1], ARGV[a], ARGV[a + 1], minToken)
end
historyFlush(KEYS[3], historyMax, claimer)
return out
