-- Give reserved or sold tickets back to the gate and end an operation.
-- KEYS: 1 gate hash, 2 buyers hash, 3 in-flight zset, 4 idempotency key ('' or
--       KEYS[1] .. ':-' = none; see reserve.lua), 5 the waitlist offers hash
-- ARGV: 1 operation id, 2 the waitlist entry whose offer the tickets came from ('' = none),
--       then pairs of (user id, quantity).
-- Returned tickets go on sale (`remaining`) or, while the event's waitlist is on, to its
-- `pool`, from which they are offered in the waitlist's order (core/services/waitlists.py).
-- Tickets from an offer whose purchase recorded no order go back to that offer instead.
-- Returns 0 when the gate is missing (its rebuild from PostgreSQL already counts these
-- tickets), 2 when tickets went to the pool (offers are due), else 1.
local exists = redis.call('EXISTS', KEYS[1]) == 1
local pooled = false
if exists then
  local total = 0
  for i = 3, #ARGV, 2 do
    local user, qty = ARGV[i], tonumber(ARGV[i + 1])
    total = total + qty
    if redis.call('HINCRBY', KEYS[2], user, -qty) <= 0 then redis.call('HDEL', KEYS[2], user) end
  end
  if ARGV[2] ~= '' and total > 0 then
    redis.call('HSET', KEYS[5], ARGV[3], total .. ':' .. ARGV[2])
  elseif total > 0 then
    pooled = redis.call('HGET', KEYS[1], 'wl') == 'on'
    redis.call('HINCRBY', KEYS[1], pooled and 'pool' or 'remaining', total)
  end
  redis.call('HINCRBY', KEYS[1], 'seq', 1)
end
redis.call('ZREM', KEYS[3], ARGV[1])
if KEYS[4] ~= '' and KEYS[4] ~= KEYS[1] .. ':-' then redis.call('DEL', KEYS[4]) end
if not exists then return 0 end
return pooled and 2 or 1
