--[[
  The ownership proof shared by settle, release and progress: the caller names its
  session and the fencing token of its grant; both must match a running record, and the
  caller's session must still be alive on the server (read once per batch: `alive`).
  Returns the record, or an error reply (codes mirrored by ReplyCode in src/shared/codes.ts);
  with -13 the record comes back too.
    -10 unknown task   -11 not owner   -12 token superseded (newer token)
    -13 already settled (state)   -14 session expired   -15 deadline passed
  The checks run in this order on purpose: -13 is answered only to the grant's own
  session and token, so settle and release can tell a retry of their own applied write.
]]
local function checkOwner(container, index, field, alive, session, token, now, checkDeadline)
  local r, err = load(container, index, field, now)
  if err then return nil, err end
  if not r then return nil, {-10} end
  if r.token > token then return nil, {-12, r.token, r.session} end
  if r.token < token or r.session ~= session then return nil, {-11, r.token, r.session} end
  if r.state ~= 'R' then return r, {-13, r.state} end
  if not alive then return nil, {-14} end
  if checkDeadline and now >= r.deadline then return nil, {-15, now - r.deadline} end
  return r, nil
end

-- The owner's change sequence: +1 for every batch of its settles and releases, carried by
-- their events (q), so that a standby can tell with one read per owner whether it missed
-- one of them. Kept while the owner's outcomes are (retention).
local function nextSeq(seqKey, keepMs)
  local q = rcall('INCR', seqKey)
  rcall('PEXPIRE', seqKey, keepMs)
  return q
end
