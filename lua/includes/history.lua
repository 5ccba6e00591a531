--[[
  Task history: a capped Stream per namespace (<prefix>:{<ns>}:history, declared by the
  scripts that write it). A script collects the transitions it makes and appends them as
  one entry per call: a batch of transitions costs one XADD, not one per task.

  Entry fields:  s  the session that made the transitions
                 t  the transitions, one per line: kind|token|attempt|ref|detail
    kind: c0..c6 granted (claim.lua's grant kinds: fresh, session-expired, deadline-passed,
          retry, handover, connection-lost, reclaimed; detail: the previous owner),
          d done, f failed (detail: the error's code and message, cut to 80 bytes),
          x released (handover), u given back unused (a lost lease)
    '\', '|' and newlines in ref and detail are escaped as \\, \! and \n.
  The entry's id is the server time of the call. Trimmed with MAXLEN ~ <maxLen>; a
  maxLen of 0 writes nothing.
]]
local historyLines = {}

local function historyEscape(s)
  if string.find(s, '[\\|\n]') then
    s = string.gsub(s, '[\\|\n]', {['\\'] = '\\\\', ['|'] = '\\!', ['\n'] = '\\n'})
  end
  return s
end

local function historyNote(kind, token, attempt, ref, detail)
  historyLines[#historyLines + 1] = kind .. '|' .. int(token) .. '|' .. int(attempt) .. '|' ..
    historyEscape(ref) .. '|' .. historyEscape(detail or '')
end

-- The error's code and message, from a failure's error JSON, cut to 80 bytes.
local function historyError(payload)
  local ok, e = pcall(cjson.decode, payload)
  if not ok or type(e) ~= 'table' then return string.sub(payload, 1, 80) end
  local text = ''
  if type(e.code) == 'string' then text = e.code .. ': ' end
  if type(e.message) == 'string' then text = text .. e.message end
  return string.sub(text, 1, 80)
end

local function historyFlush(key, maxLen, session)
  if #historyLines == 0 or not maxLen or maxLen <= 0 then return end
  rcall('XADD', key, 'MAXLEN', '~', maxLen, '*', 's', session, 't', table.concat(historyLines, '\n'))
  historyLines = {}
end
