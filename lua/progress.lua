--[[
  progress: the owner records how far its handlers got (a number and an optional note),
  for a batch of its grants, so that inspect and a later owner can see it. Each record
  keeps its lifetime.

  Input (the caller passes numkeys = 1 + 2 × tasks):
    KEYS[1] owner's session key
    KEYS[2i]    container of task i   KEYS[2i+1]  index zset of task i (the container in
                plain mode)
    ARGV[1] session id
    ARGV[2 + 4(i-1)] .. ARGV[5 + 4(i-1)], task i: field ('' in plain mode), fencing token,
            progress (a number, as text), note JSON ('' for none)

  Output: one reply per task, in order:
    { 1, serverNow }   recorded
    { -10 } unknown task   { -11, token, session } not owner
    { -12, token, session } token superseded   { -13, state } already settled
    { -14 } session expired   { -15, msLate } deadline passed
    { -1, excerpt } corrupt   { -2, version } newer format   { -4, type } wrong type

  Events: none (progress is not a state change).
]]
--- @include "includes/record"
--- @include "includes/owner"

local session = ARGV[1]
local tasks = (#KEYS - 1) / 2
local now = serverNowMs()
local alive = rcall('PTTL', KEYS[1]) > 0

local out = {}
for i = 1, tasks do
  local a = 2 + 4 * (i - 1)
  local container, index, field = KEYS[2 * i], KEYS[2 * i + 1], ARGV[a]
  local r, err = checkOwner(container, index, field, alive, session, tonumber(ARGV[a + 1]), now, true)
  if err then
    out[i] = err
  else
    r.progress = ARGV[a + 2]
    r.payload = ARGV[a + 3]
    r.updatedAt = now
    update(container, index, field, r)
    out[i] = {1, now}
  end
end
return out
