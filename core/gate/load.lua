-- Write an event's gate from a PostgreSQL snapshot.
-- KEYS: 1 gate hash, 2 buyers hash, 3 in-flight zset, 4 waitlist offers hash
-- ARGV: 1 mode ('init' | 'reconcile'), 2 expected seq, 3 remaining, 4 starts, 5 ends,
--       6 limit, 7 pool, 8 waitlist ('' none, 'on', 'paused'), 9 number of offers n,
--       then n triples (user id, tickets offered, entry id), then pairs of
--       (user id, tickets held).
-- 'init' writes only when the gate is missing (first use, or Redis was lost).
-- 'reconcile' writes only when nothing touched the gate since the caller's snapshot
-- (same seq, nothing in flight), so a correction never races a purchase.
local seq = redis.call('HGET', KEYS[1], 'seq')
if ARGV[1] == 'init' then
  if seq then return 0 end
  seq = '0'
else
  if (seq or '') ~= ARGV[2] then return 0 end
  if redis.call('ZCARD', KEYS[3]) > 0 then return 0 end
end
redis.call('DEL', KEYS[2], KEYS[4])
redis.call('HSET', KEYS[1], 'remaining', ARGV[3], 'starts', ARGV[4], 'ends', ARGV[5],
  'limit', ARGV[6], 'pool', ARGV[7], 'seq', tonumber(seq) + 1)
if ARGV[8] == '' then
  redis.call('HDEL', KEYS[1], 'wl')
else
  redis.call('HSET', KEYS[1], 'wl', ARGV[8])
end
local offers = tonumber(ARGV[9])
for i = 10, 9 + 3 * offers, 3 do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1] .. ':' .. ARGV[i + 2])
end
for i = 10 + 3 * offers, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return 1
