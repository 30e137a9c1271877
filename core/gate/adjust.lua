-- Change an event's remaining tickets by a delta and (optionally) its sale settings.
-- KEYS: 1 gate hash, 2 in-flight zset
-- ARGV: 1 delta, 2 operation id, 3 'begin' | 'end', 4 starts, 5 ends, 6 limit ('' = keep)
-- 'begin' marks the operation in flight (a reconciliation must wait for it);
-- 'end' ends it. A negative delta is refused when fewer tickets remain.
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[3] == 'end' then redis.call('ZREM', KEYS[2], ARGV[2]) end
  return {'missing', 0}
end
local delta = tonumber(ARGV[1])
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining'))
if delta < 0 and remaining + delta < 0 then return {'insufficient', remaining} end
redis.call('HINCRBY', KEYS[1], 'remaining', delta)
redis.call('HINCRBY', KEYS[1], 'seq', 1)
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'starts', ARGV[4], 'ends', ARGV[5], 'limit', ARGV[6])
end
if ARGV[3] == 'begin' then
  redis.call('ZADD', KEYS[2], redis.call('TIME')[1], ARGV[2])
else
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return {'ok', remaining + delta}
