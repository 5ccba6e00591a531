--[[
  peek: the standby's safety net. One call checks a batch of watched tasks (pub/sub is
  at-most-once, so a missed event must still be noticed), without granting anything.

  Input (variable number of keys; the caller passes numkeys):
    KEYS[i]    container of task i (record key, or hash)
    ARGV[1]    session key prefix
    ARGV[1+i]  field of task i ('' in plain mode)

  Output: one string per task, in order:
    ''                  absent
    '<state>:<token>:<orphaned>'   state R/D/F/X, orphaned 1 when R and the owner's
                        session is gone or the deadline has passed, else 0
    'E:<code>'          the record is unreadable (-1 corrupt, -2 newer format, -4 type)

  Events: none.
]]
--- @include "includes/record"

local sessionPrefix = ARGV[1]
local now = serverNowMs()
local out = {}
local alive = {}
for i, container in ipairs(KEYS) do
  local field = ARGV[i + 1]
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
      if pttl == nil then
        pttl = sessionPttl(sessionPrefix, r.session)
        alive[r.session] = pttl
      end
      if pttl == 0 or now >= r.deadline then orphaned = 1 end
    end
    out[i] = r.state .. ':' .. string.format('%d', r.token) .. ':' .. orphaned
  end
end
return out
