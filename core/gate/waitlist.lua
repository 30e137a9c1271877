-- The gate's half of an event's waitlist (core/services/waitlists.py has the rules).
-- While the waitlist is on (gate field wl = 'on'), tickets that come back go to the
-- gate's `pool` instead of on sale (release.lua, adjust.lua); offers move them from the
-- pool to the offers hash, where they are the offered buyer's alone (reserve.lua).
-- KEYS: 1 gate hash, 2 in-flight zset, 3 offers hash (user -> '<quantity>:<entry id>')
-- ARGV[1] is the mode:
--   'mode', wl ('' none, 'on', 'paused'): set the waitlist's state; off or paused, the
--           pool goes on sale. Returns the tickets moved.
--   'take', operation id, now: take the whole pool for an offer round, the operation in
--           flight (a reconciliation waits for it). Returns the tickets taken.
--   'offer', operation id, where the rest goes ('pool' | 'remaining'), the rest, then
--           triples (user id, quantity, entry id): hold the offers, put back the rest,
--           end the operation. Returns 1 (0: the gate is missing; its rebuild counts all).
--   'revoke', then pairs (user id, entry id): end these offers if they are still out
--           (an offer a purchase took is gone already). Returns the tickets returned.
local mode = ARGV[1]
local exists = redis.call('EXISTS', KEYS[1]) == 1
if mode == 'offer' then redis.call('ZREM', KEYS[2], ARGV[2]) end
if not exists then return 0 end
local gate = redis.call('HMGET', KEYS[1], 'pool', 'wl')
local pool, on = tonumber(gate[1] or '0'), gate[2] == 'on'
local function give_back(tickets, to)
  if tickets <= 0 then return end
  if to == 'pool' and not on then to = 'remaining' end
  redis.call('HINCRBY', KEYS[1], to, tickets)
end
if mode == 'mode' then
  if ARGV[2] == '' then
    redis.call('HDEL', KEYS[1], 'wl')
  else
    redis.call('HSET', KEYS[1], 'wl', ARGV[2])
  end
  if ARGV[2] == 'on' or pool == 0 then return 0 end
  redis.call('HSET', KEYS[1], 'pool', 0)
  redis.call('HINCRBY', KEYS[1], 'remaining', pool)
  redis.call('HINCRBY', KEYS[1], 'seq', 1)
  return pool
end
if mode == 'take' then
  if pool <= 0 or not on then return 0 end
  redis.call('HSET', KEYS[1], 'pool', 0)
  redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[2])
  return pool
end
if mode == 'offer' then
  for i = 5, #ARGV, 3 do
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1] .. ':' .. ARGV[i + 2])
  end
  give_back(tonumber(ARGV[4]), ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'seq', 1)
  return 1
end
-- 'revoke'
local returned = 0
for i = 2, #ARGV, 2 do
  local offer = redis.call('HGET', KEYS[3], ARGV[i])
  local tickets, entry = string.match(offer or '', '^(%d+):(%d+)$')
  if entry == ARGV[i + 1] then
    redis.call('HDEL', KEYS[3], ARGV[i])
    returned = returned + tonumber(tickets)
  end
end
give_back(returned, 'pool')
if returned > 0 then redis.call('HINCRBY', KEYS[1], 'seq', 1) end
return returned
