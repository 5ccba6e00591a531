--[[
  peek: the standby's safety net. One call checks a batch of watched tasks (pub/sub is
  at-most-once, so a missed event must still be noticed), without granting anything.

  Input (the caller passes numkeys = tasks + owners; every key the script touches is
  declared, see claim.lua):
    KEYS[i]      container of task i (record key, or hash), i = 1..t
    KEYS[t+o]    session key of owner o (the sessions the caller expects as holders)
    ARGV[1]      t, the number of tasks
    ARGV[1+i]    field of task i ('' in plain mode)
    ARGV[1+t+o]  session id of owner o

  Output: one string per task, in order:
    ''                  absent
    '<state>:<token>:<orphaned>'   state R/D/F/X, orphaned 1 when R and the owner's
                        session is gone or the deadline has passed, '?' when R and the
                        owner's session key was not declared (a claim decides), else 0
    'E:<code>'          the record is unreadable (-1 corrupt, -2 newer format, -4 type)

  Events: none.
]]
--- @include "includes/record"

local tasks = tonumber(ARGV[1])
local ownerKeys = {}
for o = 1, #KEYS - tasks do ownerKeys[ARGV[1 + tasks + o]] = KEYS[tasks + o] end
local now = serverNowMs()
local out = {}
local alive = {}
for i = 1, tasks do
  local container, field = KEYS[i], ARGV[i + 1]
  local raw, err = loadRaw(container, '', field, now)
  local r
  if not err and raw then r, err = decodeRecord(raw) end
  if err and err.err then
    return err -- not a record problem (a missing ACL grant, say): raise it
  elseif err then
    out[i] = 'E:' .. err[1]
  elseif not raw then
    out[i] = ''
  else
    local orphaned = 0
    if r.state == 'R' then
      local pttl = alive[r.session]
      local key = ownerKeys[r.session]
      if pttl == nil and key then
        pttl = rcall('PTTL', key)
        alive[r.session] = pttl
      end
      if now >= r.deadline or (pttl ~= nil and pttl <= 0) then
        orphaned = 1
      elseif pttl == nil then
        orphaned = '?'
      end
    end
    out[i] = r.state .. ':' .. string.format('%d', r.token) .. ':' .. tostring(orphaned)
  end
end
return out
