-- Give reserved or sold tickets back to the gate and end an operation.
-- KEYS: 1 gate hash, 2 buyers hash, 3 in-flight zset, 4 idempotency key ('' or
--       KEYS[1] .. ':-' = none; see reserve.lua)
-- ARGV: 1 operation id, then pairs of (user id, quantity).
-- A lost gate is left missing: its rebuild from PostgreSQL already counts these tickets.
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists then
  local total = 0
  for i = 2, #ARGV, 2 do
    local user, qty = ARGV[i], tonumber(ARGV[i + 1])
    total = total + qty
    if redis.call('HINCRBY', KEYS[2], user, -qty) <= 0 then redis.call('HDEL', KEYS[2], user) end
  end
  redis.call('HINCRBY', KEYS[1], 'remaining', total)
  redis.call('HINCRBY', KEYS[1], 'seq', 1)
end
redis.call('ZREM', KEYS[3], ARGV[1])
if KEYS[4] ~= '' and KEYS[4] ~= KEYS[1] .. ':-' then redis.call('DEL', KEYS[4]) end
return exists and 1 or 0
