-- Keep the count of an event's line: what its commit batches served, and whether its
-- numbers can be trusted (core/gate/line.py explains the rules).
-- KEYS: 1 gate hash, 2 served log (list), 3 commit batches in progress (hash: id -> start)
-- ARGV: 1 mode, 2 batch id (begin, done) or line name (skip, doubt), then per mode:
--   begin: 3 now, 4 seconds after which a batch that never finished counts as dead
--          -> {line name or '', opened, trusted ('' = not decided yet, '-' = doubted)}
--   done:  3 line name from begin, 4 orders of the line made final, 5 all orders made
--          final, 6 now, 7 the batch's seconds, 8 '1' to trust the line
--   skip | doubt: nothing more
-- The gate hash is only ever changed when it exists (a partial gate would break the
-- reserve script); the log and the batches may outlive it.
local mode = ARGV[1]
local line = redis.call('HGET', KEYS[1], 'line')
if mode == 'begin' then
  -- A batch that began long ago and never finished died (a killed worker) after or
  -- before its commit: the served count may be short, so the line is trusted no more.
  local stale = tonumber(ARGV[3]) - tonumber(ARGV[4])
  local entries = redis.call('HGETALL', KEYS[3])
  for i = 1, #entries, 2 do
    if tonumber(entries[i + 1]) < stale then
      if line then redis.call('HSET', KEYS[1], 'trusted', '-') end
      redis.call('HDEL', KEYS[3], entries[i])
    end
  end
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[3], 86400)
  if not line then return {'', '0', ''} end
  local seen = redis.call('HMGET', KEYS[1], 'opened', 'trusted')
  return {line, seen[1] or '0', seen[2] or ''}
end
if mode == 'done' then
  redis.call('HDEL', KEYS[3], ARGV[2])
  if line and line == ARGV[3] then
    redis.call('HINCRBY', KEYS[1], 'served', tonumber(ARGV[4]))
    if ARGV[8] == '1' then redis.call('HSETNX', KEYS[1], 'trusted', line) end
  elseif line and tonumber(ARGV[4]) > 0 then
    -- The line was opened during the batch (Redis lost the gate): it missed these.
    redis.call('HSET', KEYS[1], 'trusted', '-')
  end
  if tonumber(ARGV[5]) > 0 then
    redis.call('LPUSH', KEYS[2], ARGV[6] .. ':' .. ARGV[5] .. ':' .. ARGV[7])
    redis.call('LTRIM', KEYS[2], 0, 31)
    redis.call('EXPIRE', KEYS[2], 86400)
  end
  return 1
end
if not line or line ~= ARGV[2] then return 0 end
if mode == 'skip' then
  redis.call('HINCRBY', KEYS[1], 'served', 1)
elseif mode == 'doubt' then
  redis.call('HSET', KEYS[1], 'trusted', '-')
end
return 1
