-- Join an event's waiting room (or read one's place again): core/gate/room.lua's library
-- comes first. Joining twice keeps the place.
-- KEYS: 1-6 the room's keys (room_keyset), 7 the gate hash, 8 the buyer's request
--       counter for this rate window (KEYS[1] .. ':-' = no rate limit)
-- ARGV: 1 user id, 2 now (epoch s), 3 requests allowed per window, 4 window (s)
-- Returns room_reply: status throttled | missing | closed | waiting | admitted |
-- expired | sold_out, `created` set on the first join (with the early key, if early).
local k = room_keyset(KEYS, 1, KEYS[7])
local user, now = ARGV[1], tonumber(ARGV[2])
if KEYS[8] ~= KEYS[1] .. ':-' and room_throttle(KEYS[8], tonumber(ARGV[3]), tonumber(ARGV[4])) then
  return room_reply({status = 'throttled'})
end
local r = room_read(k)
if not r then return room_reply({status = 'missing'}) end
if r.on ~= '1' then return room_reply({status = 'closed'}) end
local remaining, opens = room_gate(k)
if not remaining then return room_reply({status = 'missing'}) end
-- Advance before adding too: a room that had caught up banks its second first.
room_advance(k, r, now, remaining, opens)
local created, early_key = false, nil
if redis.call('HEXISTS', k.late, user) == 0 and not redis.call('ZSCORE', k.early, user) then
  -- Before the opening the early set grows; from it on, its size is final.
  if now < opens then
    early_key = room_early_key(r.secret, user)
    redis.call('ZADD', k.early, early_key, user)
  else
    local seq = redis.call('HINCRBY', k.room, 'seq', 1)
    redis.call('HSET', k.late, user, redis.call('ZCARD', k.early) + seq)
  end
  redis.call('HINCRBY', k.room, 'joined', 1)
  created = true
end
-- Advance after adding: a room that had caught up admits the new joiner at once.
local a = room_admission_of(k, user, now)
a.created, a.early_key = created, early_key
a.recent = room_recent(k, now)
if now >= opens then a.early_count = redis.call('ZCARD', k.early) end
return room_reply(a)
