--[[
  Shared pieces of every pairlock transition: the server clock, the record format,
  and the two storage modes (plain key or hash field) behind one load/store pair.

  Record format, version 2 (one string, '|' separated, payload last so it may hold '|'):
    2|<state>|<token>|<attempt>|<session>|<deadline>|<claimedAt>|<updatedAt>|<progress>|<kind>|<payload>
  Version 1 (read, never written) lacks <kind>; its grants read as kind 0 (fresh) on the
  first attempt and 1 (session expired) after it.
  state     R running, D done, F failed, X released (handed over)
  token     fencing token: +1 on every grant of the task
  attempt   number of grants so far (first run, takeovers, retries, handovers)
  session   the owner's session id (the key <sessionPrefix><session> is its liveness lease)
  deadline  R: server ms after which the task is orphaned; F: server ms when a retry
            may be granted; D/X: 0
  claimedAt, updatedAt   server ms of the grant and of the last transition
  progress  last reported progress number ('' when none)
  kind      how the current grant came about: 0 fresh, 1 owner session expired, 2 deadline
            passed, 3 retry after failure, 4 handover, 5 owner's connection gone, 6 its
            own worker took it back (so that a claimer that lost its grant's reply is told
            the grant's real kind when it asks again)
  payload   D: result JSON, F: error JSON, R: progress note JSON, X: ''
            Quorum mode: a grant's record holds, until its first progress report, its undo
            note in the payload instead: the record the grant replaced, encoded (in this
            format), or '-' when there was none (undo-2.lua restores it). decodeRecord
            moves it to r.undo (r.payload is then ''), so no other script sees it;
            encodeRecord writes it back only while the record is that grant, untouched:
            running, no progress, no note.

  Hash-field mode keeps an index zset (KEYS[2]) of field -> server ms at which the field
  may be dropped, because a hash field has no TTL of its own before Redis 7.4. Every
  script that touches the hash sweeps at most SWEEP_LIMIT expired fields, so no call ever
  scans the whole hash.
]]
local rcall = redis.call
local SWEEP_LIMIT = 20

-- Redis time, in ms. Every expiry decision in pairlock uses this, never a worker's clock.
local function serverNowMs()
  local t = rcall('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer as Redis takes it in a command, or as the record writes it. Numbers met in one
-- call repeat (the server time, a deadline, a retention, tokens and attempts), and Lua's
-- number-to-string conversion is a sprintf: each is formatted once per call. A number
-- handed to redis.call is formatted by Redis itself, also with sprintf, so keys' TTLs go
-- in as these strings too.
local intStrings = {}
local function int(n)
  local s = intStrings[n]
  if not s then
    s = string.format('%d', n)
    intStrings[n] = s
  end
  return s
end

-- The other way (a strtod): digits read in one call repeat as well.
local numbers = {}
local function num(s)
  local n = numbers[s]
  if not n then
    n = tonumber(s)
    numbers[s] = n
  end
  return n
end

-- Reply codes shared by every script (mirrored by ReplyCode in src/shared/codes.ts).
local E_CORRUPT = -1
local E_VERSION = -2
local E_WRONGTYPE = -4

local function decodeRecord(raw)
  local ver = string.match(raw, '^([1-9]%d*)|')
  if ver and ver ~= '1' and ver ~= '2' then return nil, {E_VERSION, ver} end
  local s, k, a, o, d, c, u, p, g, payload
  if ver == '2' then
    s, k, a, o, d, c, u, p, g, payload = string.match(raw,
      '^2|([RDFX])|(%d+)|(%d+)|([^|]+)|(%d+)|(%d+)|(%d+)|([^|]*)|([0-6])|(.*)$')
  else
    s, k, a, o, d, c, u, p, payload =
      string.match(raw, '^1|([RDFX])|(%d+)|(%d+)|([^|]+)|(%d+)|(%d+)|(%d+)|([^|]*)|(.*)$')
  end
  -- Lua numbers are doubles: past 15 digits a token (or time) is no longer exact, and a
  -- takeover could hand out a token that is not higher. Such a record is not ours.
  if not s or #k > 15 or #a > 15 or #d > 15 or #c > 15 or #u > 15 then
    return nil, {E_CORRUPT, string.sub(raw, 1, 64)}
  end
  local attempt = num(a)
  local kind = tonumber(g)
  if not kind then
    kind = 1
    if attempt <= 1 then kind = 0 end
  end
  local undo = nil
  if s == 'R' and p == '' and payload ~= '' then
    undo = payload
    payload = ''
  end
  return {
    state = s, token = num(k), attempt = attempt, session = o,
    deadline = num(d), claimedAt = num(c), updatedAt = num(u),
    progress = p, kind = kind, payload = payload, undo = undo
  }, nil
end

local function encodeRecord(r)
  local payload = r.payload
  if r.undo and r.state == 'R' and r.progress == '' and payload == '' then payload = r.undo end
  return '2|' .. r.state .. '|' .. int(r.token) .. '|' .. int(r.attempt) .. '|' .. r.session ..
    '|' .. int(r.deadline) .. '|' .. int(r.claimedAt) .. '|' .. int(r.updatedAt) .. '|' ..
    r.progress .. '|' .. int(r.kind or 0) .. '|' .. payload
end

-- The undo note a quorum grant keeps: the record it replaces (false: none), encoded, but
-- without that record's own note: only the latest grant of a task can be undone.
local function undoNote(replaced)
  if not replaced then return '-' end
  local note = replaced.undo
  replaced.undo = nil
  local raw = encodeRecord(replaced)
  replaced.undo = note
  return raw
end

local function sweep(container, index, now)
  local expired = rcall('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, SWEEP_LIMIT)
  if #expired > 0 then
    rcall('HDEL', container, unpack(expired))
    rcall('ZREM', index, unpack(expired))
  end
end

-- A key of another type is reported as such; any other error (a missing ACL grant, say)
-- is raised as it is, so that it is not mistaken for a foreign key.
local function readError(err, expected)
  if string.find(err.err, '^WRONGTYPE') then return {E_WRONGTYPE, expected} end
  return redis.error_reply(err.err)
end

-- Returns raw (or false when absent), errorReply.
local function loadRaw(container, index, field, now)
  if field == '' then
    local raw = redis.pcall('GET', container)
    if type(raw) == 'table' and raw.err then return false, readError(raw, 'string') end
    return raw, nil
  end
  -- index '' (peek): read the field as it stands, without sweeping
  if index ~= '' then
    local idxType = rcall('TYPE', index)['ok']
    if idxType ~= 'zset' and idxType ~= 'none' then return false, {E_WRONGTYPE, 'zset'} end
  end
  local raw = redis.pcall('HGET', container, field)
  if type(raw) == 'table' and raw.err then return false, readError(raw, 'hash') end
  if index == '' then return raw, nil end
  if raw then
    local dropAt = rcall('ZSCORE', index, field)
    if dropAt and tonumber(dropAt) <= now then
      -- logically expired: the same as a plain key whose TTL ran out
      rcall('HDEL', container, field)
      rcall('ZREM', index, field)
      raw = false
    end
  end
  sweep(container, index, now)
  return raw, nil
end

local function load(container, index, field, now)
  local raw, err = loadRaw(container, index, field, now)
  if err then return nil, err end
  if not raw then return false, nil end
  return decodeRecord(raw)
end

-- keepMs: how long the record must live from now (retention, plus the deadline while running).
local function store(container, index, field, r, now, keepMs)
  local raw = encodeRecord(r)
  if field == '' then
    rcall('SET', container, raw, 'PX', int(keepMs))
    return
  end
  rcall('HSET', container, field, raw)
  rcall('ZADD', index, int(now + keepMs), field)
  -- the hash and its index live as long as their longest-lived field
  if rcall('PTTL', container) < keepMs then rcall('PEXPIRE', container, int(keepMs)) end
  if rcall('PTTL', index) < keepMs then rcall('PEXPIRE', index, int(keepMs)) end
end

-- No record at all, as if the task had never been claimed (undo of a first grant).
local function remove(container, index, field)
  if field == '' then
    rcall('DEL', container)
    return
  end
  rcall('HDEL', container, field)
  rcall('ZREM', index, field)
end

-- Keep the record and its remaining lifetime; only the value changes.
local function update(container, index, field, r)
  local raw = encodeRecord(r)
  if field == '' then
    rcall('SET', container, raw, 'KEEPTTL')
  else
    rcall('HSET', container, field, raw)
  end
end

-- channel: '' for none; '#<name>' publishes on the shard channel <name> (SPUBLISH, Redis 7
-- sharded pub/sub: on a Cluster the message stays in the shard that owns the namespace's
-- slot); any other name is a classic channel (PUBLISH).
-- A message as it is (one event object, or an array of them for a batch).
local function publishRaw(channel, text)
  if channel == '' then return end
  if string.byte(channel, 1) == 35 then
    rcall('SPUBLISH', string.sub(channel, 2), text)
  else
    rcall('PUBLISH', channel, text)
  end
end

local function publish(channel, event, ref, r, extra)
  if channel == '' then return end
  local msg = {e = event, r = ref, s = r.state, k = r.token, a = r.attempt, o = r.session}
  if extra then for key, value in pairs(extra) do msg[key] = value end end
  publishRaw(channel, cjson.encode(msg))
end
