-- Change an event's tickets by a delta and (optionally) its sale settings.
-- KEYS: 1 gate hash, 2 in-flight zset
-- ARGV: 1 delta, 2 operation id, 3 'begin' | 'end', 4 starts, 5 ends, 6 limit ('' = keep)
-- 'begin' marks the operation in flight (a reconciliation must wait for it);
-- 'end' ends it. Tickets added go on sale, or to the waitlist's pool while it is on;
-- tickets taken come from those on sale, then from the pool, and are refused when fewer
-- are free. Returns {status, tickets free (on sale + pool)}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[3] == 'end' then redis.call('ZREM', KEYS[2], ARGV[2]) end
  return {'missing', 0}
end
local delta = tonumber(ARGV[1])
local gate = redis.call('HMGET', KEYS[1], 'remaining', 'pool', 'wl')
local remaining, pool = tonumber(gate[1]), tonumber(gate[2] or '0')
if delta < 0 and remaining + pool + delta < 0 then return {'insufficient', remaining + pool} end
if delta > 0 and gate[3] == 'on' then
  redis.call('HINCRBY', KEYS[1], 'pool', delta)
elseif delta < 0 and remaining + delta < 0 then
  redis.call('HSET', KEYS[1], 'remaining', 0, 'pool', pool + remaining + delta)
else
  redis.call('HINCRBY', KEYS[1], 'remaining', delta)
end
redis.call('HINCRBY', KEYS[1], 'seq', 1)
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'starts', ARGV[4], 'ends', ARGV[5], 'limit', ARGV[6])
end
if ARGV[3] == 'begin' then
  redis.call('ZADD', KEYS[2], redis.call('TIME')[1], ARGV[2])
else
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return {'ok', remaining + pool + delta}
