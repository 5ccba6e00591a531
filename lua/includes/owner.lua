--[[
  The ownership proof shared by settle, release and progress: the caller names its
  session and the fencing token of its grant; both must match a running record, and the
  caller's session must still be alive on the server. Returns the record, or an error
  reply (codes mirrored by ReplyCode in src/codes.ts); with -13 the record comes back too.
  The checks run in this order on purpose: -13 is answered only to the grant's own
  session and token, so settle and release can tell a retry of their own applied write.
    -10 unknown task   -11 not owner   -12 token superseded (newer token)
    -13 already settled (state)   -14 session expired   -15 deadline passed
]]
local function checkOwner(container, index, field, sessionKey, session, token, now, checkDeadline)
  local r, err = load(container, index, field, now)
  if err then return nil, err end
  if not r then return nil, {-10} end
  if r.token > token then return nil, {-12, r.token, r.session} end
  if r.token < token or r.session ~= session then return nil, {-11, r.token, r.session} end
  if r.state ~= 'R' then return r, {-13, r.state} end
  if rcall('PTTL', sessionKey) <= 0 then return nil, {-14} end
  if checkDeadline and now >= r.deadline then return nil, {-15, now - r.deadline} end
  return r, nil
end
