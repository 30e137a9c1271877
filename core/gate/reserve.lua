-- Reserve tickets for one purchase request, atomically. Registered after the waiting
-- room's library (core/gate/room.lua), whose functions check the buyer's admission here.
-- KEYS: 1 gate hash, 2 buyers hash, 3 in-flight zset, 4 idempotency key ('' = none),
--       5 the buyer's request counter for this rate window ('' = no rate limit),
--       6 the event's served log, 7 its commit batches in progress (core/gate/line.lua),
--       8-13 the event's waiting room (room_keyset's order; {on = 0}: no room),
--       14 the event's waitlist offers (user -> '<quantity>:<entry id>');
--       an absent key 4 or 5 may also come as KEYS[1] .. ':-' (Redis Cluster wants
--       every key of a script in one slot, and '' hashes to slot 0)
-- ARGV: 1 user id, 2 quantity, 3 now (epoch s), 4 operation id,
--       5 request fingerprint, 6 idempotency TTL (s), 7 requests allowed per window,
--       8 window length (s)
-- Returns {status, value}: ok/remaining, replay/stored value, missing, sale_not_open,
-- sold_out, sold_out_waitlist (the event has a waitlist to join), insufficient/remaining,
-- limit/allowance, offer_exceeded/tickets offered, throttled/0, not_joined/0, and
-- not_admitted/0 or admission_expired/0 followed by the room's reply (room_reply, parsed
-- by core/waiting_room.py's RoomAnswer). An 'ok' also carries
-- the order's number in the event's line and the line as it stands (core/gate/line.py):
-- line name, number, served, trusted name, served log, batch starts, and the waitlist
-- entry whose offer it took ('' for none). The line is opened by the first accept on this
-- gate and named after its operation id.
--
-- A buyer with a waitlist offer buys from it: its tickets are the buyer's alone, whatever
-- the stock and the waiting room say; what the purchase leaves of it goes back where
-- returned tickets go (the gate's `pool` while the waitlist is on: core/gate/waitlist.lua).
local gate = redis.call('HMGET', KEYS[1], 'remaining', 'starts', 'ends', 'limit', 'line', 'wl')
if not gate[1] then return {'missing', 0} end
local absent = {[''] = true, [KEYS[1] .. ':-'] = true}
-- The rate limit is counted here, in the same round trip as the availability check, and
-- before it: every request counts, refusals and replays included (a missing gate is
-- rebuilt and asked again, so that first answer does not count).
if not absent[KEYS[5]] then
  local seen = redis.call('INCR', KEYS[5])
  if seen == 1 then redis.call('EXPIRE', KEYS[5], tonumber(ARGV[8])) end
  if seen > tonumber(ARGV[7]) then return {'throttled', 0} end
end
local idem = KEYS[4]
if absent[idem] then idem = '' end
if idem ~= '' then
  local stored = redis.call('GET', idem)
  if stored then return {'replay', stored} end
end
local now = tonumber(ARGV[3])
local starts, ends = tonumber(gate[2]), tonumber(gate[3])
if (starts > 0 and now < starts) or (ends > 0 and now >= ends) then
  return {'sale_not_open', 0}
end
local remaining, qty = tonumber(gate[1]), tonumber(ARGV[2])
local limit = tonumber(gate[4])
local function over_limit()
  if limit <= 0 then return nil end
  local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  if held + qty > limit then return {'limit', math.max(limit - held, 0)} end
end
local offer = redis.call('HGET', KEYS[14], ARGV[1])
local offered, entry, status, room, admission = 0, '', 'offer', nil, nil
if offer then
  offered, entry = string.match(offer, '^(%d+):(%d+)$')
  offered = tonumber(offered)
  if qty > offered then return {'offer_exceeded', offered} end
  local refusal = over_limit()
  if refusal then return refusal end
else
  if remaining <= 0 then return {gate[6] and 'sold_out_waitlist' or 'sold_out', 0} end
  -- The waiting room, after the answers that do not depend on it (a replay of an
  -- accepted order is answered even once its admission has expired) and before the
  -- stock is taken.
  room = room_keyset(KEYS, 8, KEYS[1])
  admission = room_admission_of(room, ARGV[1], now)
  status = admission.status
  if status == 'missing' then return {'missing', 0} end  -- rebuild the gate and the room
  if status == 'not_joined' then return {'not_joined', 0} end
  if status == 'waiting' or status == 'expired' then
    admission.recent = room_recent(room, now)
    local refusal = status == 'waiting' and 'not_admitted' or 'admission_expired'
    return {refusal, 0, unpack(room_reply(admission))}
  end
  -- 'closed' (no room) and 'admitted' go on ('sold_out' cannot follow the check above).
  if remaining < qty then return {'insufficient', remaining} end
  local refusal = over_limit()
  if refusal then return refusal end
end
-- No holder at all: no order of this event is pending, so a line opened now counts
-- every order in it (core/gate/line.py, "Trust").
local nobody = not gate[5] and redis.call('EXISTS', KEYS[2]) == 0
if offer then
  redis.call('HDEL', KEYS[14], ARGV[1])
  if offered > qty then
    local back = gate[6] == 'on' and 'pool' or 'remaining'
    redis.call('HINCRBY', KEYS[1], back, offered - qty)
    if back == 'remaining' then remaining = remaining + offered - qty end
  end
  remaining = remaining + qty  -- the reply's tickets left: the stock was not touched
else
  redis.call('HINCRBY', KEYS[1], 'remaining', -qty)
end
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
redis.call('ZADD', KEYS[3], now, ARGV[4])
if idem ~= '' then redis.call('SET', idem, 'p:' .. ARGV[5], 'EX', tonumber(ARGV[6])) end
local line = gate[5]
if not line then
  line = string.sub(ARGV[4], -12)
  redis.call('HSET', KEYS[1], 'line', line, 'opened', ARGV[3], 'arrived', 0, 'served', 0)
  if nobody then redis.call('HSET', KEYS[1], 'trusted', line) end
end
-- Bought: the admission no longer holds a place (automatic admission lets the next in).
if status == 'admitted' then room_bought(room, admission.r, admission.number, now) end
local number = redis.call('HINCRBY', KEYS[1], 'arrived', 1)
local seen = redis.call('HMGET', KEYS[1], 'served', 'trusted')
return {'ok', remaining - qty, line, number, seen[1] or '0', seen[2] or '',
  redis.call('LRANGE', KEYS[6], 0, 31), redis.call('HVALS', KEYS[7]), entry}
