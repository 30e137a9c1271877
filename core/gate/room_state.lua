-- Read (and advance) an event's waiting room: a buyer's own state, or with no user the
-- public state. core/gate/room.lua's library comes first.
-- KEYS: as core/gate/room_join.lua
-- ARGV: 1 user id ('' = the public state), 2 now (epoch s), 3 requests allowed per
--       window, 4 window (s), 5 a new automatic capacity ('' = keep it)
-- Returns room_reply: status throttled | missing | closed | ok (public) | not_joined |
-- waiting | admitted | expired | sold_out.
local k = room_keyset(KEYS, 1, KEYS[7])
local user, now = ARGV[1], tonumber(ARGV[2])
if KEYS[8] ~= KEYS[1] .. ':-' and room_throttle(KEYS[8], tonumber(ARGV[3]), tonumber(ARGV[4])) then
  return room_reply({status = 'throttled'})
end
if ARGV[5] ~= '' and redis.call('HGET', k.room, 'on') == '1' then
  redis.call('HSET', k.room, 'capacity', ARGV[5])
end
local a
if user == '' then
  local status, r, remaining, opens = room_open(k, now)
  a = {status = status, r = r, remaining = remaining, opens = opens}
else
  a = room_admission_of(k, user, now)
end
if a.status == 'missing' or a.status == 'closed' then return room_reply(a) end
a.recent = room_recent(k, now)
if now >= a.opens then a.early_count = redis.call('ZCARD', k.early) end
return room_reply(a)
