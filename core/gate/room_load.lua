-- Write an event's room hash after a rebuild from PostgreSQL (the entries were written
-- first), unless a room is already on: the first rebuild wins, later ones change
-- nothing. core/gate/room.lua's library comes first.
-- KEYS: 1-6 the room's keys, 7 the gate hash
-- ARGV: 1 now, then pairs of (room field, value), serving and window among them.
-- Every number up to `serving` is admitted anew from now (nobody admitted loses the
-- admission for good). Returns 1 when written, 0 when a room was there.
local k = room_keyset(KEYS, 1, KEYS[7])
if redis.call('HGET', k.room, 'on') == '1' then return 0 end
redis.call('DEL', k.room, k.admits, k.ranges)
for i = 2, #ARGV, 2 do redis.call('HSET', k.room, ARGV[i], ARGV[i + 1]) end
local r = room_read(k)
if r.on == '1' and r.serving > 0 then
  local now = tonumber(ARGV[1])
  local range = '1:' .. r.serving .. ':' .. string.format('%.3f', now)
  redis.call('ZADD', k.ranges, 1, range)
  redis.call('ZADD', k.admits, now + r.window, range)
end
return 1
