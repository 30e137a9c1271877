-- The waiting room's library: local functions only, no top-level return, no KEYS or
-- ARGV. The entry scripts (core/gate/room_*.lua) and the gate's reserve script
-- (reserve.lua) are this file followed by their own body (core/waiting_room.py's
-- `room_script`; core/gate/keys.py for reserve.lua).
--
-- Keys (all in the event's slot {ev:N}) come as a table `k`:
--   k.room    hash: on, rate ('' = automatic), paused, window (admission seconds),
--             capacity, serving, advanced_at, seq, joined, expired, admitted_total,
--             open (admitted, not bought, not expired), secret
--   k.early   zset: user -> early key (joined before the opening)
--   k.late    hash: user -> number (joined from the opening on)
--   k.admits  zset: admission range 'a:b:t' -> deadline (ranges not yet expired)
--   k.ranges  zset: admission range 'a:b:t' -> a (every range, to find a number's)
--   k.bought  zset: number -> number (numbers that bought)
--   k.gate    the gate hash (remaining, starts: the opening; core/gate/__init__.py)
-- A range 'a:b:t' admitted numbers a..b from time t on; it is extended while the
-- counter moves within a second of t (so there are at most about one per second).

local ROOM_FIELDS = {'on', 'rate', 'paused', 'window', 'capacity', 'serving',
  'advanced_at', 'seq', 'joined', 'expired', 'admitted_total', 'open', 'secret'}

local function room_keyset(list, first, gate)
  -- The six room keys from position `first` of `list` (a KEYS table), plus the gate.
  return {room = list[first], early = list[first + 1], late = list[first + 2],
    admits = list[first + 3], ranges = list[first + 4], bought = list[first + 5],
    gate = gate}
end

local function room_read(k)
  -- The room hash as a table of numbers (secret and rate as read); nil when missing.
  local values = redis.call('HMGET', k.room, unpack(ROOM_FIELDS))
  if not values[1] then return nil end
  local r = {}
  for i, name in ipairs(ROOM_FIELDS) do r[name] = values[i] end
  for _, name in ipairs({'window', 'capacity', 'serving', 'advanced_at', 'seq', 'joined',
      'expired', 'admitted_total', 'open'}) do
    r[name] = tonumber(r[name] or '0')
  end
  r.rate = tonumber(r.rate or '')  -- nil: automatic
  return r
end

local function room_throttle(counter, allowed, period)
  -- Count one request of a buyer in its rate window; true when over the limit.
  local seen = redis.call('INCR', counter)
  if seen == 1 then redis.call('EXPIRE', counter, period) end
  return seen > allowed
end

local function room_hex_to_bytes(hex)
  return (hex:gsub('..', function(pair) return string.char(tonumber(pair, 16)) end))
end

local function room_early_key(secret, user)
  -- HMAC-SHA1(secret, user) as a 52-bit integer: uniform, stable, not guessable.
  local inner, outer = {}, {}
  for i = 1, 64 do
    local byte = i <= #secret and string.byte(secret, i) or 0
    inner[i] = string.char(bit.bxor(byte, 0x36))
    outer[i] = string.char(bit.bxor(byte, 0x5c))
  end
  local digest = redis.sha1hex(table.concat(inner) .. user)
  digest = redis.sha1hex(table.concat(outer) .. room_hex_to_bytes(digest))
  return tonumber(string.sub(digest, 1, 13), 16)
end

local function room_entries(k, r)
  return redis.call('ZCARD', k.early) + r.seq
end

local function room_expire(k, r, now)
  -- Close the ranges past their deadline; their numbers that bought nothing are freed.
  local freed = 0
  local due = redis.call('ZRANGEBYSCORE', k.admits, '-inf', now, 'LIMIT', 0, 32)
  for _, range in ipairs(due) do
    local a, b = string.match(range, '^(%d+):(%d+):')
    a, b = tonumber(a), tonumber(b)
    freed = freed + (b - a + 1) - redis.call('ZCOUNT', k.bought, a, b)
    redis.call('ZREM', k.admits, range)
  end
  return freed
end

local function room_record(k, r, from, to, now)
  -- Admit numbers from..to now: extend the last range when it began within a second.
  local last = redis.call('ZREVRANGE', k.ranges, 0, 0)[1]
  local a, b, t
  if last then a, b, t = string.match(last, '^(%d+):(%d+):(.+)$') end
  local deadline = now + r.window
  if last and tonumber(b) == from - 1 and tonumber(t) >= now - 1
      and redis.call('ZSCORE', k.admits, last) then
    redis.call('ZREM', k.admits, last)
    redis.call('ZREM', k.ranges, last)
    from = tonumber(a)
  else
    t = string.format('%.3f', now)
  end
  local range = from .. ':' .. to .. ':' .. t
  redis.call('ZADD', k.ranges, from, range)
  redis.call('ZADD', k.admits, deadline, range)
end

local function room_advance(k, r, now, remaining, opens)
  -- Move the counter to `now` (see core/waiting_room.py, "The counter"); updates `r`.
  local freed = room_expire(k, r, now)
  local target, at = r.serving, r.advanced_at
  local idle = r.paused == '1' or now < opens or remaining <= 0
  local entries = room_entries(k, r)
  if idle then
    at = now
  elseif r.rate then
    at = math.max(at, opens)
    local n = math.max(0, math.floor((now - at) * r.rate))
    local left = math.max(0, entries - r.serving - freed)
    if n >= left then
      -- Caught up: the credit not used stays banked, up to a second's worth, so the
      -- next joiners (up to the rate) are admitted at once.
      target, at = r.serving + freed + left, math.max(at + left / r.rate, now - 1)
    else
      target, at = r.serving + freed + n, at + n / r.rate
    end
  else
    target = r.serving + math.max(0, r.capacity - (r.open - freed))
  end
  target = math.min(target, entries)
  if target > r.serving then room_record(k, r, r.serving + 1, target, now) end
  local admitted = math.max(0, target - r.serving)
  r.open = math.max(0, r.open - freed + admitted)
  r.expired = r.expired + freed
  r.admitted_total = r.admitted_total + admitted
  r.serving, r.advanced_at = target, at
  redis.call('HSET', k.room, 'serving', target, 'advanced_at', string.format('%.6f', at),
    'open', r.open, 'expired', r.expired, 'admitted_total', r.admitted_total)
end

local function room_gate(k)
  -- The gate's remaining stock and opening (0: none); nil when the gate is missing.
  local gate = redis.call('HMGET', k.gate, 'remaining', 'starts')
  if not gate[1] then return nil, nil end
  return tonumber(gate[1]), tonumber(gate[2] or '0')
end

local function room_number_of(k, user, now, opens)
  -- (number or nil, early, joined): an early joiner's number is its rank, from the opening.
  local number = redis.call('HGET', k.late, user)
  if number then return tonumber(number), false, true end
  if not redis.call('ZSCORE', k.early, user) then return nil, false, false end
  if now < opens then return nil, true, true end
  return redis.call('ZRANK', k.early, user) + 1, true, true
end

local function room_deadline_of(k, number)
  -- The deadline of the admission that holds `number` (nil: none, or expired).
  local range = redis.call('ZREVRANGEBYSCORE', k.ranges, number, '-inf', 'LIMIT', 0, 1)[1]
  if not range then return nil end
  local b = tonumber(string.match(range, '^%d+:(%d+):'))
  if number > b then return nil end
  return tonumber(redis.call('ZSCORE', k.admits, range))
end

local function room_recent(k, now)
  -- Numbers admitted by the ranges that began in the last 10 s (a range's size counts
  -- at its start: an estimate within a second's admissions).
  local admitted = 0
  for _, range in ipairs(redis.call('ZREVRANGE', k.ranges, 0, 11)) do
    local a, b, t = string.match(range, '^(%d+):(%d+):(.+)$')
    if tonumber(t) >= now - 10 then admitted = admitted + tonumber(b) - tonumber(a) + 1 end
  end
  return admitted
end

local function room_open(k, now)
  -- Read and advance the room: (status, r, remaining, opens); status 'ok', 'closed'
  -- (no waiting room), or 'missing' (the room or the gate must be rebuilt).
  local r = room_read(k)
  if not r then return 'missing' end
  if r.on ~= '1' then return 'closed', r end
  local remaining, opens = room_gate(k)
  if not remaining then return 'missing' end
  room_advance(k, r, now, remaining, opens)
  return 'ok', r, remaining, opens
end

local function room_admission_of(k, user, now)
  -- Where `user` stands, after advancing the room: a table with `status` ('missing',
  -- 'closed', 'not_joined', 'waiting', 'admitted', 'expired', 'sold_out'), `number`
  -- (nil while early before the opening), `early`, `position` (number - serving),
  -- `deadline` (admitted: when the admission ends) and the room `r`, `opens`, `remaining`.
  local status, r, remaining, opens = room_open(k, now)
  if status ~= 'ok' then return {status = status, r = r} end
  local a = {r = r, remaining = remaining, opens = opens}
  local joined
  a.number, a.early, joined = room_number_of(k, user, now, opens)
  if not joined then a.status = 'not_joined'; return a end
  if a.number then a.position = a.number - r.serving end
  if a.number and a.number <= r.serving then
    a.deadline = room_deadline_of(k, a.number)
    a.status = a.deadline and a.deadline > now and 'admitted' or 'expired'
  else
    a.status = 'waiting'
  end
  if remaining <= 0 then a.status = 'sold_out' end
  return a
end

local function room_bought(k, r, number, now)
  -- Record that admitted `number` bought: the first time, its admission no longer
  -- counts against the automatic capacity (the next buyer is let in on the next call).
  if redis.call('ZADD', k.bought, number, number) == 1 then
    local deadline = room_deadline_of(k, number)
    if deadline and deadline > now and r.open > 0 then
      r.open = r.open - 1
      redis.call('HSET', k.room, 'open', r.open)
    end
  end
end

local function room_reply(a)
  -- The flat reply every entry script ends with (core/waiting_room.py, RoomAnswer).
  local r = a.r or {}
  return {a.status, a.number or '', a.early and 1 or 0, a.position or '',
    a.deadline and string.format('%.3f', a.deadline) or '', r.serving or 0,
    r.rate or '', r.capacity or 0, r.paused or '0', string.format('%.3f', a.opens or 0),
    (a.remaining or 1) <= 0 and 1 or 0, r.joined or 0, a.early_count or '',
    a.recent or 0, string.format('%.6f', r.advanced_at or 0), r.expired or 0,
    r.admitted_total or 0, r.open or 0, a.created and 1 or 0, a.early_key or ''}
end
