-- An Admin's change of an event's waiting room, or the undo of a join, or a purchase
-- recorded as bought (for tests and tools: a purchase does it in the gate's reserve
-- call). core/gate/room.lua's library comes first.
-- KEYS: 1-6 the room's keys, 7 the gate hash
-- ARGV: 1 mode, 2 now, then by mode:
--   'on'    3 rate ('' = automatic), 4 admission seconds, 5 paused (0/1), 6 capacity,
--           7 secret, 8 fresh (1: a new room, start empty, a second's admissions
--           banked so the first joiners of a sale in progress get in at once)
--   'off'   (nothing): drop the room, leaving {on = 0}: events without one
--   'leave' 3 user: undo a join whose row was not written
--   'bought' 3 user
-- Returns 'ok', or 'missing' when a room that exists in PostgreSQL is not in Redis
-- (rebuild it, then ask again), or 'not_admitted' for 'bought'.
local k = room_keyset(KEYS, 1, KEYS[7])
local mode, now = ARGV[1], tonumber(ARGV[2])
if mode == 'off' or (mode == 'on' and ARGV[8] == '1') then
  redis.call('DEL', k.room, k.early, k.late, k.admits, k.ranges, k.bought)
  if mode == 'off' then redis.call('HSET', k.room, 'on', 0); return 'ok' end
  redis.call('HSET', k.room, 'on', 1, 'rate', ARGV[3], 'window', ARGV[4], 'paused', ARGV[5],
    'capacity', ARGV[6], 'secret', ARGV[7], 'serving', 0, 'advanced_at', now - 1, 'seq', 0,
    'joined', 0, 'expired', 0, 'admitted_total', 0, 'open', 0)
  return 'ok'
end
if mode == 'leave' then
  local gone = redis.call('HDEL', k.late, ARGV[3]) + redis.call('ZREM', k.early, ARGV[3])
  if gone > 0 then redis.call('HINCRBY', k.room, 'joined', -1) end
  return 'ok'
end
-- 'on' of an existing room and 'bought': first move the counter under the old settings
-- (a re-rate keeps what was served; a pause or resume counts no paused time).
local status, r, _, opens = room_open(k, now)
if status == 'missing' then return 'missing' end
if mode == 'bought' then
  if status ~= 'ok' then return 'closed' end
  local number = room_number_of(k, ARGV[3], now, opens)
  if not number or number > r.serving then return 'not_admitted' end
  room_bought(k, r, number, now)
  return 'ok'
end
if status == 'closed' then return 'missing' end
redis.call('HSET', k.room, 'rate', ARGV[3], 'window', ARGV[4], 'paused', ARGV[5])
return 'ok'
