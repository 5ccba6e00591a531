--[[
  fencedWrite: write a value to a resource kept in Redis only when the writer's fencing
  token is higher than any token the resource has accepted. A stale holder (paused past
  its lease, then resumed) is turned away here even though it still believes it owns
  the task.

  Input:
    KEYS[1] the resource: a hash with fields 'token' and 'value'
    ARGV[1] fencing token of the writer (a positive integer)
    ARGV[2] the value
    ARGV[3] ttl ms of the resource (0: keep the current expiry)

  Output:
    { 1, previousToken }   written (previousToken 0 when the resource was new)
    { -12, currentToken }  rejected: a write with this token or a newer one was accepted
    { -4, type }           KEYS[1] holds a value that is not a hash

  Events: none.
]]
local rcall = redis.call
local key, token = KEYS[1], tonumber(ARGV[1])
local current = redis.pcall('HGET', key, 'token')
if type(current) == 'table' and current.err then return {-4, rcall('TYPE', key)['ok']} end
current = tonumber(current) or 0
if token <= current then return {-12, current} end
rcall('HSET', key, 'token', ARGV[1], 'value', ARGV[2])
if tonumber(ARGV[3]) > 0 then rcall('PEXPIRE', key, ARGV[3]) end
return {1, current}
