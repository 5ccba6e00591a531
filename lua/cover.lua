--[[
  cover: a standby's safety net, one call for every holder it covers (O(peers), whatever
  the number of tasks). For each holder session: is it alive, how far is its change
  sequence, and is the connection it is bound to still there? A sequence beyond the last
  one the standby saw in events means it missed an event of that holder, and only then
  does it re-read that holder's tasks (peek).

  Connection evidence (see includes/binding): for a holder bound on this server run whose
  liveness channel has no subscriber, each sighting adds the server time since the last
  one (at most 100 ms a step) to the binding's lost age; a sighting of the channel
  subscribed again clears it. A claim may take the holder's tasks over once that age is
  the holder's crash grace (claim.lua).

  Input (the caller passes numkeys = 3 × holders + 1):
    KEYS[3i-2]  session key of holder i   KEYS[3i-1]  its change sequence (includes/owner)
    KEYS[3i]    its binding key
    KEYS[3k+1]  the namespace's check record (Sharing, below; k holders); may be absent (3k keys)
                when ARGV[2] is '' or 0
    ARGV[1]     liveness channel prefix (channel = prefix .. session id; '' to read no
                connection evidence)
    ARGV[2]     share window ms ('' or 0: neither read nor write the check record)
    ARGV[3 + i] session id of holder i   (ARGV[3] unused, reserved)

  Output: one { pttl, seq, lostInMs, shared } per holder, in order: pttl 0 when the session
    is gone, -1 when it exists but its remaining time was not read (Sharing, below); seq 0
    when the holder has settled or released nothing within the retention;
    lostInMs -2 when the holder's session is not bound to a connection, -1 without a
    sighting of its connection gone, else the ms until a claim may take its tasks over on
    that evidence (0: now); shared 1 when answered from the check record, else 0.

  Events: none.

  Sharing (ARGV[2] > 0).
  One check per holder, shared by every standby (the namespace's check record): with N
  workers each covering the N − 1 others, a check per standby would cost Redis O(N²). A
  check of a healthy holder is written to the record KEYS[3k+1] (one per namespace):
  { [session] = { p = pttl, l = lostInMs } }, and the record lives ARGV[2] ms
  (the share window, a little below the standbys' check interval) by the server's own
  expiry; an entry added to a live record (a holder the first checker did not cover) keeps
  that record's expiry. A call finding a holder's entry there answers from it: no PTTL or
  NUMSUB of its own (the reply says so: shared 1). So each holder is checked about once
  per interval in all, whatever the number of standbys. Commands: one MGET (the record and
  every holder's sequence and binding), then, only if some holder is checked, one EXISTS
  for the sessions of the bound holders checked (one PTTL each where a single one is, or
  where one is found gone, and for the unbound ones), one NUMSUB for all their channels
  and one SET of the record (plus, as before, INFO, TIME and a SET of the binding where a
  connection is seen gone or back): O(1) commands a call, whatever the holders.
  An entry is used only while it says the holder is alive with nothing seen gone: its
  session outlives the window (p > ARGV[2], or p -1: it existed, bound) and no sighting
  (l < 0). A holder seen gone (l >= 0), or whose session is about to end or has ended, is
  checked by every call, as without sharing. Why this keeps the connection-evidence rule:
  - Nothing is decided from the record: a claim takes over only on its own reads (claim.lua
    re-checks the binding, the server run, the lost age and NUMSUB itself), and nothing in
    the record feeds the binding. The record only lets a standby skip a check.
  - A sighting (the lost age) is written by checks only, never by an answer from the
    record, so sharing adds no sightings and no age: the lost age is still a sum of steps
    of real server time between successive checks that saw the channel unsubscribed, each
    at most SIGHTING_STEP_MS (includes/binding), hence never more than the server time
    since the first sighting. Fewer checks can make the takeover later (a step longer than
    100 ms counts as 100 ms), never earlier.
  - The step cap still holds unchanged, and does not bite in the ordinary case: the
    standby whose call checked a holder last keeps calling every interval (src/worker/cover.ts:
    only a standby answered from the record polls less often), and the window is shorter
    than the interval, so its next call, one interval later, finds the entry expired and
    checks, unless another standby checked in between. Two checks of a holder are thus
    about one interval apart (40 ms by default; plus the call's latency), under the 100 ms
    cap. Only where that standby stalls, or stops covering the holder, does the next check
    wait for another standby's slower poll (at most 4 intervals): that one step counts as
    100 ms, so the takeover comes later, never earlier. And once a holder is seen gone
    every standby call checks it (an entry with l >= 0 is never used), as before sharing.
  - The first sighting comes at most one window later than a check of one's own would
    have, so at most about one interval after the connection closed, as without sharing.
  - An answer from the record is conservative: its pttl is the entry's less the whole
    window (a session never looks longer-lived than it is; one that would look ended is
    checked instead), or -1 (alive, not read: a bound holder, which its standbys poll
    every interval or few, and which a check reads again with EXISTS). Its change
    sequence is read now, in the MGET: a missed event is noticed as without sharing.
]]
local rcall = redis.call
--- @include "includes/binding"

local livePrefix = ARGV[1]
local shareMs = tonumber(ARGV[2]) or 0
local holders = math.floor(#KEYS / 3)
local recordKey = KEYS[3 * holders + 1]
if not recordKey then shareMs = 0 end
-- nothing to cover: nothing to read (MGET needs a key)
if holders == 0 then return {} end

-- one MGET: the check record (when sharing) and every holder's sequence and binding
local names = {}
for i = 1, holders do
  names[2 * i - 1] = KEYS[3 * i - 1]
  names[2 * i] = KEYS[3 * i]
end
if shareMs > 0 then names[2 * holders + 1] = recordKey end
local vals = rcall('MGET', unpack(names))
local record, recordLive = nil, false
if shareMs > 0 and vals[2 * holders + 1] then
  local ok, dec = pcall(cjson.decode, vals[2 * holders + 1])
  recordLive = true
  if ok and type(dec) == 'table' then record = dec end
end
record = record or {}

local out = {}
local todo = {}
for i = 1, holders do
  local e = record[ARGV[3 + i]]
  local p, l = type(e) == 'table' and tonumber(e.p), type(e) == 'table' and tonumber(e.l)
  if p and l and (p == -1 or p > shareMs) and l < 0 then
    if p > 0 then p = p - shareMs end
    out[i] = {p, tonumber(vals[2 * i - 1]) or 0, l, 1}
  else
    todo[#todo + 1] = i
  end
end

if #todo > 0 then
  -- the checks. Sessions: one PTTL per holder, but with sharing, where several bound
  -- holders are checked, one EXISTS for all of them (their remaining time is then not
  -- read: pttl -1, alive; their standbys poll them every interval anyway, and a session
  -- found gone is read with PTTL). Connections: one NUMSUB for every bound holder.
  local checked = {}
  local boundOnes = {}
  for j, i in ipairs(todo) do
    local c = {i = i, pttl = nil, seq = tonumber(vals[2 * i - 1]) or 0, lostIn = -1}
    if livePrefix ~= '' then
      c.b = decodeBinding(vals[2 * i] or nil)
      if c.b and c.b.run ~= '-' then boundOnes[#boundOnes + 1] = c end
    end
    checked[j] = c
  end
  if shareMs > 0 and #boundOnes > 1 then
    local sessions = {}
    for n, c in ipairs(boundOnes) do sessions[n] = KEYS[3 * c.i - 2] end
    if rcall('EXISTS', unpack(sessions)) == #boundOnes then
      for _, c in ipairs(boundOnes) do c.pttl = -1 end
    end
  end
  local channels = {}
  for _, c in ipairs(checked) do
    if not c.pttl then
      c.pttl = rcall('PTTL', KEYS[3 * c.i - 2])
      if c.pttl < 0 then c.pttl = 0 end
    end
    if c.pttl ~= 0 and livePrefix ~= '' then
      if not c.b then
        c.lostIn = -2
      elseif c.b.run ~= '-' then
        c.channel = livePrefix .. ARGV[3 + c.i]
        channels[#channels + 1] = c.channel
      end
    else
      c.b = nil
    end
  end
  -- subscribers of each channel: '#<name>' is a shard channel (SHARDNUMSUB; all of a
  -- namespace's channels hash to its slot), any other name a classic one (NUMSUB)
  local subscribers = {}
  if #channels > 0 then
    local reply
    if string.byte(livePrefix, 1) == 35 then
      local names2 = {}
      for n, ch in ipairs(channels) do names2[n] = string.sub(ch, 2) end
      reply = rcall('PUBSUB', 'SHARDNUMSUB', unpack(names2))
      for n, ch in ipairs(channels) do subscribers[ch] = tonumber(reply[2 * n]) or 0 end
    else
      reply = rcall('PUBSUB', 'NUMSUB', unpack(channels))
      for n, ch in ipairs(channels) do subscribers[ch] = tonumber(reply[2 * n]) or 0 end
    end
  end
  local now = nil
  for _, c in ipairs(checked) do
    local b, i = c.b, c.i
    -- the server run is read only once a holder is gone
    local gone = c.channel ~= nil and subscribers[c.channel] == 0
    if b and not gone and b.seenAt ~= 0 then
      -- subscribed again (a reconnect): the sighting no longer holds
      clearLost(b)
      rcall('SET', KEYS[3 * i], encodeBinding(b), 'KEEPTTL')
    elseif gone and b.run == serverRunId() then
      if not now then
        local t = rcall('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      sightLost(b, now)
      rcall('SET', KEYS[3 * i], encodeBinding(b), 'KEEPTTL')
      c.lostIn = b.grace - b.lostAge
      if c.lostIn < 0 then c.lostIn = 0 end
    end
    out[i] = {c.pttl, c.seq, c.lostIn, 0}
    if shareMs > 0 then record[ARGV[3 + i]] = {p = c.pttl, l = c.lostIn} end
  end
  if shareMs > 0 then
    if recordLive then
      rcall('SET', recordKey, cjson.encode(record), 'KEEPTTL')
    else
      rcall('SET', recordKey, cjson.encode(record), 'PX', shareMs)
    end
  end
end
return out
